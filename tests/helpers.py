"""Tiny modules, data and trainers shared by the tests (``from helpers import tiny_phase1``).

pytest puts ``tests/`` on ``sys.path`` (its ``conftest.py`` lives there, without an ``__init__.py``),
so every test file can import this module by its bare name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import Dataset

from multifeat.data import AttributeDataModule, FeatureClassifierDataModule
from multifeat.phases import ConditionalGAN, FeatureClassifier, Phase1GAN, Phase3GAN, StyleGAN2ADA

#: Phase 1 at 16 px with 4-channel networks: a step takes milliseconds
TINY_PHASE1 = dict(image_size=16, z_dim=8, g_width=4, d_width=4, max_width=16)
TINY_CGAN = dict(image_size=16, z_dim=8, g_width=4, d_width=4, max_width=16, embed_dim=4)
TINY_STYLEGAN2 = dict(image_size=16, z_dim=8, w_dim=8, mapping_layers=1, channel_base=32, channel_max=8,
                      mbstd_group_size=2, conv_clamp=None, num_fixed=4)
TINY_PHASE3 = dict(add_blocks=[8], adain_at="feat8", num_fixed=4)

#: trainer arguments of a silent CPU run
QUIET = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
             num_sanity_val_steps=0, limit_val_batches=0)


def tiny_phase1(**overrides: Any) -> Phase1GAN:
    """A 16 px Phase1GAN (``TINY_PHASE1``, then ``overrides``)."""
    return Phase1GAN(**{**TINY_PHASE1, **overrides})


def tiny_cgan(**overrides: Any) -> ConditionalGAN:
    return ConditionalGAN(**{**TINY_CGAN, **overrides})


def tiny_stylegan2(**overrides: Any) -> StyleGAN2ADA:
    return StyleGAN2ADA(**{**TINY_STYLEGAN2, **overrides})


def tiny_phase3(inputs: dict[str, str], **overrides: Any) -> Phase3GAN:
    """A Phase3GAN grown from ``inputs["g1"]`` with ``inputs["d2"]`` (see :func:`make_phase3_inputs`)."""
    return Phase3GAN(g1_ckpt=inputs["g1"], d2_ckpt=inputs["d2"], **{**TINY_PHASE3, **overrides})


def quiet_trainer(max_steps: int, **kw: Any) -> L.Trainer:
    """A silent CPU trainer for ``max_steps`` batches (no logger, no checkpoints unless given)."""
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(max_steps=max_steps, **{**QUIET, **kw})


def tiny_data(**overrides: Any) -> AttributeDataModule:
    """32 synthetic 16 px faces in batches of 8, no validation split."""
    return AttributeDataModule(**{"source": "synthetic", "image_size": 16, "num_samples": 32, "batch_size": 8,
                                  "val_fraction": 0.0, "seed": 3, **overrides})


def make_phase3_inputs(folder: Path, steps: int = 2) -> dict[str, str]:
    """Phase-1 and Phase-2 checkpoints at 16 px (``steps`` batches each) for building a Phase3GAN."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    L.seed_everything(0, verbose=False)
    t = quiet_trainer(steps)
    t.fit(tiny_phase1(num_fixed=4), datamodule=tiny_data(num_samples=16, require={"bald": True}))
    t.save_checkpoint(str(folder / "g1.ckpt"))
    t = quiet_trainer(steps)
    t.fit(FeatureClassifier(image_size=16, width=4, max_width=8),
          datamodule=FeatureClassifierDataModule(feature="bald", image_size=16, num_samples=16, batch_size=8,
                                                 val_fraction=0.0))
    t.save_checkpoint(str(folder / "d2.ckpt"))
    return {"g1": str(folder / "g1.ckpt"), "d2": str(folder / "d2.ckpt")}


class NaNFrom(Dataset):
    """Wraps a dataset; the images of the items at ``bad_indices`` become NaN."""

    def __init__(self, base: Dataset, bad_indices: set[int]) -> None:
        self.base = base
        self.bad = set(bad_indices)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        item = self.base[i]
        if i in self.bad:
            item = {**item, "image": torch.full_like(item["image"], float("nan"))}
        return item
