"""The shared machinery of the benchmark's methods: what a method gets (:class:`Context`) and hands
back (:class:`Trained`), and quiet, seeded Lightning training with atomic weights-only checkpoints."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch


@dataclass
class Trained:
    """What a method hands to the evaluation."""

    sample: Callable[..., torch.Tensor] | None
    train_seconds: float
    training_sets: dict[str, dict[str, int]]
    images: torch.Tensor | None = None      # Method B: the mixes, already drawn
    shared_seconds: float = 0.0             # b-d: the shared phases 1 and 2 (also in train_seconds)
    generate_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """Everything a method needs: the resolved config and where to write."""

    config: dict[str, Any]
    features: tuple[str, str]
    log: Callable[[str], None] = print

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def source(self) -> str:
        return str(self.config["data"]["source"])

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


# ------------------------------------------------------------------------------------ plumbing
@contextlib.contextmanager
def quiet():
    """Silence Lightning's banner lines and loader warnings while the benchmark trains."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*number of training batches.*")
            warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=r".*LitLogger.*")
            warnings.filterwarnings("ignore", message=r".*fewer than batch_size.*")
            warnings.filterwarnings("ignore", message=r".*no `validation_step`.*")
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
            yield
    finally:
        for n, lv in levels.items():
            logging.getLogger(n).setLevel(lv)


def make_trainer(ctx: Context, root: Path, **kwargs: Any):
    """A quiet Trainer: no logger, no checkpoints of its own, no progress bar (one line per run instead)."""
    base = {"accelerator": ctx.config["accelerator"], "devices": 1, "logger": False,
            "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
            "num_sanity_val_steps": 0, "default_root_dir": str(root), "limit_val_batches": 0}
    if ctx.config["precision"]:
        base["precision"] = ctx.config["precision"]
    base.update(kwargs)
    return L.Trainer(**base)


def fit(ctx: Context, module, data, root: Path, seed: int, callbacks=(), **trainer_kwargs: Any) -> tuple[Any, float]:
    """``seed_everything(seed)`` then ``Trainer.fit``; returns (trainer, seconds)."""
    L.seed_everything(int(seed), workers=True, verbose=False)
    trainer = make_trainer(ctx, root, callbacks=list(callbacks), **trainer_kwargs)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    if trainer.interrupted:
        raise KeyboardInterrupt
    return trainer, time.perf_counter() - t0


def save_checkpoint(trainer, path: Path) -> Path:
    """Weights-only checkpoint written atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        trainer.save_checkpoint(str(tmp), weights_only=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def validation_metrics(ctx: Context, module, data, root: Path) -> dict[str, float]:
    """One validation pass (the classifiers' accuracy, for the run record)."""
    trainer = make_trainer(ctx, root, limit_val_batches=1.0)
    out = trainer.validate(module, datamodule=data, verbose=False)
    row = out[0] if out else {}
    return {k: round(float(v), 4) for k, v in row.items() if k in ("val/acc", "val/auroc", "loss/val")}


__all__ = ["Context", "Trained", "fit", "make_trainer", "quiet", "save_checkpoint", "validation_metrics"]
