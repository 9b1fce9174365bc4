"""Data for training and testing the attribute evaluator on real faces (CelebA layout).

:class:`EvaluatorDataModule` is an :class:`~multifeat.data.AttributeDataModule` with what a judge
needs on top:

- ``positive_rates()``: each attribute's share of positives in the training split, for the
  evaluator's ``balance`` loss weights (CelebA's ``bald`` is 4.5 % of the faces);
- a **test** loader over ``split`` (``test`` by default; ``all``, ``train`` or ``valid``), which
  ``multifeat test`` uses to log balanced accuracy and AUROC per attribute;
- ``framing``: the test faces shown in another framing than the training faces (:func:`reframe`),
  to check that the judge reads the features and not the crop it was trained on.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from multifeat.data import AttributeDataModule
from multifeat.errors import ConfigError

#: The other framings of the test faces (:func:`reframe`); ``none`` is the faces as stored.
FRAMINGS: tuple[str, ...] = ("none", "zoom_in", "zoom_out", "shift", "jpeg")


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from multifeat.eval.judge_data import _jpeg_round_trip

    return _jpeg_round_trip(x, quality)


def reframe(images: torch.Tensor, framing: str, index: int = 0) -> torch.Tensor:
    """``images`` ``[N,3,S,S]`` (or ``[3,S,S]``) in [-1, 1] in another framing, same side S:

    - ``zoom_in``: the central 75 % of the frame enlarged to S (bilinear, antialiased): tighter on the face;
    - ``zoom_out``: the frame shrunk to 75 % and centred on a border-replicated canvas: more background;
    - ``shift``: moved by 12.5 % of S (8 px at 64 px) right/left and down/up, the direction chosen by
      ``index`` (its parity bits), the uncovered border replicated;
    - ``jpeg``: re-encoded as JPEG at quality 40 (the stored faces are JPEG at 92);
    - ``none``: unchanged.
    """
    if framing not in FRAMINGS:
        raise ConfigError(f"unknown framing {framing!r}; valid: {', '.join(FRAMINGS)}")
    single = images.ndim == 3
    x = (images.unsqueeze(0) if single else images).float()
    s = x.shape[-1]
    if framing == "zoom_in":
        m = int(round(s * 0.125))
        y = F.interpolate(x[..., m : s - m, m : s - m], size=(s, s), mode="bilinear", align_corners=False, antialias=True)
    elif framing == "zoom_out":
        k = int(round(s * 0.75))
        small = F.interpolate(x, size=(k, k), mode="bilinear", align_corners=False, antialias=True)
        lo = (s - k) // 2
        y = F.pad(small, (lo, s - k - lo, lo, s - k - lo), mode="replicate")
    elif framing == "shift":
        d = max(1, s // 8)
        dx = d if index % 2 == 0 else -d
        dy = d if (index // 2) % 2 == 0 else -d
        padded = F.pad(x, (d, d, d, d), mode="replicate")
        y = padded[..., d - dy : d - dy + s, d - dx : d - dx + s]
    elif framing == "jpeg":
        y = _jpeg(x, 40)
    else:
        y = x
    y = y.clamp(-1, 1)
    return y[0] if single else y


class _Reframed(Dataset):
    def __init__(self, base: Dataset, framing: str) -> None:
        self.base, self.framing = base, framing

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        item["image"] = reframe(item["image"], self.framing, index=i)
        return item


class EvaluatorDataModule(AttributeDataModule):
    """:class:`~multifeat.data.AttributeDataModule` plus a test split, its framing and the training
    split's positive rates (see the module docstring).

    Args:
        split: the images of the test loader: ``test`` (default), ``valid``, ``train`` or ``all``.
            CelebA's official partition when it has one; for synthetic faces and folders only ``all``.
        framing: how the test faces are shown, one of :data:`FRAMINGS` (default ``none``).
        **kwargs: :class:`~multifeat.data.AttributeDataModule`'s arguments.
    """

    def __init__(self, *args: Any, split: str = "test", framing: str = "none", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if split not in ("all", "train", "valid", "test"):
            raise ConfigError(f"split must be one of all, train, valid, test; got {split!r}")
        if framing not in FRAMINGS:
            raise ConfigError(f"framing must be one of {', '.join(FRAMINGS)}; got {framing!r}")
        if self.source != "celeba" and split != "all":
            raise ConfigError(f"split {split!r} exists for CelebA only; use split: all for {self.source} data")
        self.split, self.framing = split, framing
        self.hparams.update(split=split, framing=framing)

    def positive_rates(self) -> dict[str, float]:
        """``{attribute: share of positives}`` over the training split."""
        self.setup("fit")
        labels = _labels_of(self.train_set)
        if labels is None:
            ys = [it["attrs"] for it in (self.train_set[i] for i in range(len(self.train_set)))]
            labels = torch.stack(ys).float()
        rates = labels.float().mean(0)
        return {a: float(rates[i]) for i, a in enumerate(self.attribute_names)}

    def test_dataloader(self) -> DataLoader:
        ds = self.build_dataset(self.split)
        if self.framing != "none":
            ds = _Reframed(ds, self.framing)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers, drop_last=False)


def _labels_of(ds: Dataset) -> torch.Tensor | None:
    """The label matrix of a CelebA dataset or a Subset of one, without reading images (else None)."""
    from torch.utils.data import Subset

    if isinstance(ds, Subset):
        inner = _labels_of(ds.dataset)
        return None if inner is None else inner[list(ds.indices)]
    labels = getattr(ds, "labels", None)
    return labels if isinstance(labels, torch.Tensor) else None


__all__ = ["FRAMINGS", "EvaluatorDataModule", "reframe"]
