"""AttributeDataModule: one LightningDataModule for the three image sources.

Config example (LightningCLI)::

    data:
      class_path: multifeat.data.AttributeDataModule
      init_args:
        source: synthetic          # synthetic | celeba | folder
        image_size: 64
        require: {bald: true}      # keep only bald faces
        synthetic: {joint_fraction: 0.02}
        batch_size: 64

Batches: ``{"image": float [B,3,S,S] in [-1,1], "attrs": float [B,A] 0/1, "index": long [B]}`` with
``A = len(dm.attribute_names)``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Subset

from multifeat.data.common import ATTRIBUTES, DataWarning, check_power_of_two
from multifeat.errors import ConfigError

_SYNTHETIC_KEYS = ("attribute_probs", "joint_fraction", "cache")


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_loader_args(batch_size: object, num_workers: object, val_fraction: object, seed: object) -> None:
    """Validate the arguments every data module shares; raises :class:`ConfigError`."""
    check_positive_int(batch_size, "batch_size")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) or not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic random split of ``range(n)`` into (train, val); val gets round(n * val_fraction)
    items, at least one when ``val_fraction > 0`` and ``n >= 2``."""
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


class AttributeDataModule(LightningDataModule):
    """Images with binary attribute labels from synthetic faces, CelebA or an image folder.

    Args:
        source: ``"synthetic"`` (:class:`SyntheticFaces`), ``"celeba"`` (:class:`CelebADataset`,
            ``root`` holds ``celeba/``) or ``"folder"`` (:class:`ImageFolderDataset`, ``root`` is the folder).
        root: data folder for ``celeba`` and ``folder``; ignored by ``synthetic``.
        image_size: S, a power of two (16..256 for synthetic, 8..1024 otherwise). Default 64.
        attributes: attribute names of the ``attrs`` vector, in order. Default: ``ATTRIBUTES`` for
            synthetic and CelebA (CelebA also accepts its own 40 names and ``derived`` names); for
            folders the keys of ``folder_attrs``.
        require: filter ``{name: true/false}`` (CelebA also 1/-1); only matching images are used.
        num_samples: number of synthetic faces (train + val). Default 4096. Synthetic only.
        synthetic: extra :class:`SyntheticFaces` options: ``attribute_probs``, ``joint_fraction``, ``cache``.
        derived: CelebA only: extra any-of attribute definitions, e.g. ``{"beard": ["Goatee", "!No_Beard"]}``.
        folder_attrs: folder only: constant labels of every image, e.g. ``{"bald": 1}``.
        crop: centre-crop side (pixels) before resizing real images; default the shorter side.
        strict: folder only: a bad or too small file is an error instead of a warning.
        batch_size, num_workers: DataLoader settings (defaults 64, 0).
        val_fraction: fraction held out for validation (default 0.1). CelebA with
            ``list_eval_partition`` uses the official train/valid partitions instead.
        seed: seed of the split, of the shuffling order and of the synthetic faces (default 0).
        drop_last: drop the last incomplete training batch (only when the train set holds at least one batch).
        pin_memory: DataLoader ``pin_memory``.
    """

    def __init__(
        self,
        source: Literal["synthetic", "celeba", "folder"] = "synthetic",
        root: str | None = None,
        image_size: int = 64,
        attributes: list[str] | None = None,
        require: dict[str, bool | int] | None = None,
        num_samples: int = 4096,
        synthetic: dict[str, Any] | None = None,
        derived: dict[str, list[str]] | None = None,
        folder_attrs: dict[str, int] | None = None,
        crop: int | None = None,
        strict: bool = False,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        drop_last: bool = True,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if source not in ("synthetic", "celeba", "folder"):
            raise ConfigError(f"source must be one of synthetic, celeba, folder; got {source!r}")
        if source == "synthetic":
            check_power_of_two(image_size, "image_size", 16, 256)
            check_positive_int(num_samples, "num_samples")
        else:
            check_power_of_two(image_size, "image_size", 8, 1024)
            if root is None:
                raise ConfigError(f"source={source!r} needs root (the data folder)")
        check_loader_args(batch_size, num_workers, val_fraction, seed)
        if crop is not None:
            check_positive_int(crop, "crop")
        synthetic = dict(synthetic or {})
        unknown = set(synthetic) - set(_SYNTHETIC_KEYS)
        if unknown:
            raise ConfigError(f"synthetic: unknown option(s) {sorted(unknown)}; valid: {', '.join(_SYNTHETIC_KEYS)}")
        if folder_attrs is not None and source != "folder":
            raise ConfigError("folder_attrs applies to source='folder' only")
        if derived is not None and source != "celeba":
            raise ConfigError("derived applies to source='celeba' only")
        self.save_hyperparameters()
        self.source = source
        self.root = root
        self.image_size = image_size
        self.require = dict(require) if require else None
        self.num_samples = num_samples
        self.synthetic = synthetic
        self.derived = derived
        self.folder_attrs = folder_attrs
        self.crop = crop
        self.strict = strict
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = float(val_fraction)
        self.seed = seed
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self._requested_attributes = list(attributes) if attributes is not None else None
        self.attribute_names: tuple[str, ...] = self._resolve_attribute_names()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        if source == "synthetic":  # fail at construction on impossible filters (cheap: nothing is rendered)
            from multifeat.data.synthetic import SyntheticFaces

            SyntheticFaces(num_samples=1, image_size=image_size, seed=seed, require=self.require, **synthetic)

    def _resolve_attribute_names(self) -> tuple[str, ...]:
        req = self._requested_attributes
        if self.source == "synthetic":
            names = tuple(req) if req is not None else ATTRIBUTES
            bad = [a for a in names if a not in ATTRIBUTES]
            if bad:
                raise ConfigError(f"attributes: unknown name(s) {bad} for synthetic faces; valid names: {', '.join(ATTRIBUTES)}")
            return names
        if self.source == "folder":
            labels = dict(self.folder_attrs or {})
            if req is None:
                return tuple(labels)
            missing = [a for a in req if a not in labels]
            if missing:
                raise ConfigError(f"attributes {missing} have no label for a folder source; give them in folder_attrs, e.g. {{'{missing[0]}': 1}}")
            return tuple(req)
        return tuple(req) if req is not None else ATTRIBUTES  # CelebA checks names against its label file

    # -- datasets -------------------------------------------------------------------------------
    def build_dataset(self, split: str = "all") -> Dataset:
        """The full dataset of this configuration (``split`` is used by CelebA's official partitions)."""
        if self.source == "synthetic":
            from multifeat.data.synthetic import SyntheticFaces

            return _SelectAttrs(
                SyntheticFaces(num_samples=self.num_samples, image_size=self.image_size, seed=self.seed,
                               require=self.require, **self.synthetic),
                self.attribute_names,
            )
        if self.source == "celeba":
            from multifeat.data.celeba import CelebADataset

            return CelebADataset(self.root, image_size=self.image_size, attributes=list(self.attribute_names),
                                 require=self.require, derived=self.derived, split=split,
                                 val_fraction=self.val_fraction, seed=self.seed, crop=self.crop)
        from multifeat.data.folder import ImageFolderDataset

        ds = ImageFolderDataset(self.root, image_size=self.image_size, attrs=self.folder_attrs,
                                attribute_names=list(self.attribute_names), strict=self.strict, crop=self.crop)
        if self.require:
            labels = {k: bool(v) for k, v in (self.folder_attrs or {}).items()}
            from multifeat.data.common import parse_require

            for name, want in parse_require(self.require, tuple(labels) or ("(none)",)).items():
                if labels[name] != want:
                    raise ConfigError(f"require {{'{name}': {want}}} matches no image: folder_attrs labels every image {name}={int(labels[name])}")
        return ds

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.source == "celeba":
            from multifeat.data.celeba import has_official_partition

            if has_official_partition(self.root):
                self.train_set = self.build_dataset("train")
                self.val_set = self.build_dataset("valid") if self.val_fraction > 0 else None
                return
        full = self.build_dataset("all")
        train_idx, val_idx = split_indices(len(full), self.val_fraction, self.seed)
        self.train_set = Subset(full, train_idx)
        self.val_set = Subset(full, val_idx) if val_idx else None

    # -- loaders --------------------------------------------------------------------------------
    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        drop_last = bool(train and self.drop_last and len(ds) >= self.batch_size)
        if train and self.drop_last and len(ds) < self.batch_size:
            warnings.warn(f"the training set has {len(ds)} images, fewer than batch_size={self.batch_size}; "
                          "keeping the incomplete batch", DataWarning, stacklevel=2)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if train else None,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader | list:
        self.setup("validate")
        return self._loader(self.val_set, train=False) if self.val_set is not None else []

    def num_batches_per_epoch(self) -> int:
        self.setup("fit")
        n = len(self.train_set)
        return n // self.batch_size if self.drop_last and n >= self.batch_size else math.ceil(n / self.batch_size)


class _SelectAttrs(Dataset):
    """Keep only the named attributes (in that order) of a SyntheticFaces item; batches stay vectorised."""

    def __init__(self, base, names: tuple[str, ...]) -> None:
        self.base = base
        self.names = names
        self._cols = None if tuple(names) == ATTRIBUTES else torch.tensor([ATTRIBUTES.index(a) for a in names], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.base)

    def _fix(self, item: dict) -> dict:
        if self._cols is not None:
            item["attrs"] = item["attrs"].index_select(0, self._cols)
        return item

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return [self._fix(it) for it in self.base.__getitems__(indices)]

    def __getitem__(self, index: int) -> dict:
        return self._fix(self.base[index])

    def __getattr__(self, name: str):  # expose the base dataset's helpers (params, masks, ...)
        if name in ("base", "names", "_cols"):
            raise AttributeError(name)
        return getattr(self.base, name)
