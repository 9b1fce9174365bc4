"""The no-joint-images guard and joint-free data (used by the benchmark and the pipeline).

The benchmark's premise is that no training image carries both requested features. Every training
set the benchmark builds (and every set the pipeline checks) goes through :func:`assert_no_joint`
before a network sees it: the guard walks the data module down to the labelled images (SyntheticFaces items, CelebA files), counts the
images in which *all* requested features are present, and raises :class:`JointImageError` (naming
the training set, the count and the first offending items) when there is one.

What the guard understands (anything else is refused, so nothing passes unchecked):

- data modules: :class:`~multifeat.data.AttributeDataModule` (train and validation sets),
  :class:`~multifeat.data.switching.SwitchingDataModule` (both stages),
  :class:`~multifeat.data.FeatureClassifierDataModule` (every source of both splits);
- datasets: ``torch.utils.data.Subset``, SyntheticFaces (exact labels, read without rendering),
  :class:`~multifeat.data.CelebADataset` (labels of the requested features looked up by file name in
  the CelebA label file, with the same derived groups), the Phase-2 composites (labelled sources,
  degraded copies of positives: labelled like their originals) and the negative bank (generated
  images of Phase 1: no real labels, counted as ``generated``).

:class:`JointFreeDataModule` is an :class:`AttributeDataModule` whose train and validation sets
drop every joint image; the CelebA protocol uses it where SyntheticFaces would use
``joint_fraction: 0`` ("all faces except the jointly-featured ones").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from multifeat.data.celeba import CelebADataset
from multifeat.data.classifier_data import (
    BankDataset,
    DegradedDataset,
    FeatureClassifierDataModule,
    LabelledSources,
)
from multifeat.data.common import ATTRIBUTES
from multifeat.data.datamodule import AttributeDataModule, _SelectAttrs
from multifeat.data.switching import SwitchingDataModule
from multifeat.data.synthetic import SyntheticFaces
from multifeat.errors import ConfigError, DataError

#: Label values of :func:`joint_flags`: the item has all features / not all / no real label.
JOINT, NOT_JOINT, UNLABELLED = 1, 0, -1


class JointImageError(DataError):
    """A benchmark training set holds an image that carries all requested features."""


# ------------------------------------------------------------------------------------------ flags
_CELEBA_CACHE: dict[tuple[str, tuple[str, ...], str], dict[str, bool]] = {}


def _celeba_lookup(ds: Any, features: tuple[str, ...], derived: dict[str, list[str]] | None) -> dict[str, bool]:
    """file name -> all ``features`` present, for every labelled image under ``ds.base`` (cached)."""

    key = (str(ds.base), features, repr(sorted((derived or {}).items())))
    if key not in _CELEBA_CACHE:
        full = CelebADataset(ds.base, image_size=8, attributes=list(features), derived=derived, split="all")
        joint = full.labels.bool().all(dim=1).numpy() if len(features) else np.zeros(len(full), bool)
        _CELEBA_CACHE[key] = dict(zip(full.files, (bool(v) for v in joint)))
    return _CELEBA_CACHE[key]


def joint_flags(dataset: Dataset, features: Sequence[str], derived: dict[str, list[str]] | None = None) -> np.ndarray:
    """Per item of ``dataset``: :data:`JOINT` (1), :data:`NOT_JOINT` (0) or :data:`UNLABELLED` (-1).

    ``features``: the requested feature names (SyntheticFaces: names of ``ATTRIBUTES``; CelebA: columns
    or derived groups such as ``bald``/``beard``). ``derived``: CelebA's extra groups, as given to the
    data. Raises :class:`ConfigError` for a dataset type the guard does not know.
    """

    features = tuple(str(f) for f in features)
    if isinstance(dataset, Subset):
        inner = joint_flags(dataset.dataset, features, derived)
        return inner[np.asarray(dataset.indices, dtype=np.int64)] if len(dataset.indices) else inner[:0]
    if isinstance(dataset, _SelectAttrs):
        return joint_flags(dataset.base, features, derived)
    if isinstance(dataset, SyntheticFaces):
        unknown = [f for f in features if f not in ATTRIBUTES]
        if unknown:
            raise ConfigError(f"features {unknown} are not SyntheticFaces attributes ({', '.join(ATTRIBUTES)})")
        cols = [ATTRIBUTES.index(f) for f in features]
        if len(dataset) == 0:
            return np.zeros(0, np.int8)
        attrs = np.stack([dataset.attributes(i) for i in range(len(dataset))])
        return (attrs[:, cols] > 0.5).all(axis=1).astype(np.int8)
    if isinstance(dataset, CelebADataset):
        table = _celeba_lookup(dataset, features, derived)
        return np.array([JOINT if table.get(f, False) else NOT_JOINT for f in dataset.files], dtype=np.int8)
    if isinstance(dataset, LabelledSources):
        parts = [joint_flags(d, features, derived) for d, _ in dataset.parts]
        return np.concatenate(parts) if parts else np.zeros(0, np.int8)
    if isinstance(dataset, DegradedDataset):  # degraded copies of real positives: labelled like them
        return joint_flags(dataset.base, features, derived)
    if isinstance(dataset, BankDataset):  # Phase-1 generated samples, not real images
        return np.full(len(dataset), UNLABELLED, dtype=np.int8)
    raise ConfigError(
        f"cannot count jointly-featured images in a {type(dataset).__name__}; the benchmark only trains on "
        "SyntheticFaces, CelebA and the negative bank, whose labels it can check"
    )


def _splits(datamodule: Any) -> list[tuple[str, Dataset]]:
    """(name, dataset) of every split of a data module the benchmark trains with (after setup)."""

    if isinstance(datamodule, Dataset):
        return [("dataset", datamodule)]
    if isinstance(datamodule, SwitchingDataModule):
        return [(f"{stage}/{name}", ds) for stage in ("before", "after")
                for name, ds in _splits(getattr(datamodule, stage))]
    if isinstance(datamodule, (AttributeDataModule, FeatureClassifierDataModule)):
        datamodule.setup("fit")
        out = [("train", datamodule.train_set)]
        if datamodule.val_set is not None:
            out.append(("val", datamodule.val_set))
        return out
    raise ConfigError(f"cannot count jointly-featured images in a {type(datamodule).__name__}")


def _derived_of(datamodule: Any) -> dict[str, list[str]] | None:

    if isinstance(datamodule, SwitchingDataModule):
        return _derived_of(datamodule.before)
    return getattr(datamodule, "derived", None)


def count_joint(datamodule: Any, features: Sequence[str]) -> dict[str, Any]:
    """Count the images of every split of ``datamodule`` (or a dataset) that carry all ``features``.

    Returns ``{"images": N, "labelled": N_l, "joint": J, "generated": N_g, "splits": {name: {...}},
    "examples": [(split, position), ...]}`` (at most 5 examples of joint items).
    """
    derived = _derived_of(datamodule)
    total = {"images": 0, "labelled": 0, "joint": 0, "generated": 0, "splits": {}, "examples": []}
    for name, ds in _splits(datamodule):
        flags = joint_flags(ds, features, derived)
        row = {"images": int(flags.size), "labelled": int((flags != UNLABELLED).sum()), "joint": int((flags == JOINT).sum()),
               "generated": int((flags == UNLABELLED).sum())}
        total["splits"][name] = row
        for k in ("images", "labelled", "joint", "generated"):
            total[k] += row[k]
        for pos in np.flatnonzero(flags == JOINT)[: max(0, 5 - len(total["examples"]))]:
            total["examples"].append((name, int(pos)))
    return total


def describe_joint(counts: dict[str, Any], features: Sequence[str]) -> str:
    """``"N image(s) with all of f1, f2 (set 'train': N of M images; first at [...])"`` for counts of
    :func:`count_joint` (the part of every joint-image error that says what was found where)."""
    per_set = "; ".join(f"set '{k}': {v['joint']} of {v['images']} images" for k, v in counts["splits"].items() if v["joint"])
    return f"{counts['joint']} image(s) with all of {', '.join(features)} ({per_set}; first at {counts['examples']})"


def assert_no_joint(datamodule: Any, features: Sequence[str], what: str) -> dict[str, int]:
    """Fail loudly if any image of ``datamodule`` carries all ``features``; return the counts.

    Raises :class:`JointImageError` naming ``what`` (e.g. ``"method a (beard GAN), seed 0"``), the
    number of joint images per split and the first offending positions.
    """
    counts = count_joint(datamodule, features)
    if counts["joint"]:
        raise JointImageError(
            f"{what}: the training data hold {describe_joint(counts, features)}. The benchmark forbids "
            "jointly-featured training images: use joint_fraction: 0.0 (synthetic) or a filter that removes them"
        )
    if counts["labelled"] == 0:
        raise JointImageError(f"{what}: the training data hold no labelled image; nothing to train on")
    return {"images": counts["images"], "labelled": counts["labelled"], "joint": 0, "generated": counts["generated"]}


# ------------------------------------------------------------------------------ joint-free data
class JointFreeDataModule(AttributeDataModule):
    """An :class:`AttributeDataModule` without the images that carry all of ``exclude_joint``.

    Args:
        exclude_joint: the feature names whose joint presence removes an image (e.g. ``["bald", "beard"]``).
        **kwargs: the arguments of :class:`AttributeDataModule`.

    The train and validation sets are the parent's, filtered after ``setup`` (``removed`` records how
    many images each lost). Raises :class:`DataError` when nothing is left.
    """

    def __init__(self, exclude_joint: Sequence[str] = ("bald", "beard"), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.exclude_joint = tuple(str(f) for f in exclude_joint)
        if not self.exclude_joint:
            raise ConfigError("JointFreeDataModule needs the feature names of the joint images to remove")
        self.removed: dict[str, int] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        super().setup(stage)
        for split in ("train_set", "val_set"):
            ds = getattr(self, split)
            if ds is None:
                continue
            flags = joint_flags(ds, self.exclude_joint, self.derived)
            keep = np.flatnonzero(flags != JOINT).tolist()
            self.removed[split] = int(len(ds) - len(keep))
            if not keep:
                raise DataError(f"every image of the {split.split('_')[0]} split carries {', '.join(self.exclude_joint)}; "
                                "nothing is left after removing the jointly-featured images")
            setattr(self, split, Subset(ds, keep))


__all__ = ["JOINT", "NOT_JOINT", "UNLABELLED", "JointFreeDataModule", "JointImageError", "assert_no_joint", "describe_joint",
           "count_joint", "joint_flags"]
