"""The attribute evaluator: a multi-label classifier that judges generated images.

``AttributeEvaluator`` predicts every attribute of :data:`multifeat.data.ATTRIBUTES` (bald, beard,
eyeglasses, smiling) at once from an image ``[N, 3, S, S]`` in [-1, 1]; ``predict_proba`` gives
probabilities ``[N, A]``. It is trained on data in which all attribute combinations occur, with
binary cross-entropy on the logits.

Independence: it is a separate network, trained on separate data (by default SyntheticFaces drawn
with seed :data:`DEFAULT_EVALUATOR_SEED` = 10 000, away from the small seeds the training phases use),
never the feature classifier D2 that a Phase-3 generator was trained against. A generator that fools
its own D2 is therefore not automatically scored as having the feature.

Robustness: generated images are often smeared, noisy, checkered or off-colour, and an evaluator
trained on clean faces alone reports features in them (even in pure noise). So by default
(``robust=True``) every training batch is a :func:`robust_batch`: about half of the faces are
replaced by a :func:`degraded_view` (blur, noise, down/up-sampling, JPEG, checkerboard overlay,
colour shift) **keeping their labels**, and non-face images (:func:`nonface_images`: noise,
checkerboards, colour blobs, faces smeared to a few pixels) are appended as **negatives of every
attribute**. There is deliberately no separate "face" output: one output per attribute keeps every
report and threshold unchanged, and the attribute outputs themselves learn that an image that is not
a face carries no feature. :func:`nonface_rates` and :func:`degradation_accuracy` measure both
properties (``benchmarks/judge_robustness.py`` prints them as a table); they live in
:mod:`multifeat.eval.judge_data`.

The validation accuracy of each attribute (``val_accuracy``, ``{name: accuracy}``) and the feature
rates on fixed non-face images (``nonface_rates``, ``{kind: {name: rate}}``) are kept on the module
and in the checkpoint (``checkpoint["multifeat"]``) so every evaluation report can say how far the
judge itself can be trusted.

Train one from the command line with ``multifeat fit --config experiments/evaluator.yaml`` or in code
with :func:`train_evaluator`; load one with :func:`load_evaluator`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MultilabelAccuracy

from multifeat.errors import CheckpointError, ConfigError
from multifeat.eval.judge_data import nonface_rates, robust_batch
from multifeat.nets.classifier import ConvClassifier
from multifeat.phases.base import PhaseModule
from multifeat.utils.files import atomic_write_bytes, ensure_writable_dir

#: Seed of the SyntheticFaces draw the evaluator is trained on by default; the training phases use
#: small seeds (0, 1, ...), so the evaluator never sees a generator's training images.
DEFAULT_EVALUATOR_SEED = 10_000

#: The attributes an evaluator predicts unless told otherwise (same order as multifeat.data.ATTRIBUTES).
DEFAULT_ATTRIBUTES: tuple[str, ...] = ("bald", "beard", "eyeglasses", "smiling")


class AttributeEvaluator(PhaseModule):
    """Multi-label attribute classifier (automatic optimisation, Adam, BCE-with-logits).

    Args:
        image_size: input side S (power of two, 16-256).
        attributes: names of the predicted attributes, in output order.
        width: channels of the classifier's first stage (doubling per stage up to ``max_width``).
        max_width: channel cap of the classifier.
        norm: normalisation of the classifier (``batch``, ``instance``, ``none``).
        dropout: dropout before the linear head.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        threshold: probability at which an attribute counts as present (for the accuracy).
        robust: train on :func:`robust_batch` es (degraded views keeping their labels, non-face
            negatives) instead of the clean batches. Default True.
        degrade_prob: probability that a face of a batch is replaced by a degraded view. Default 0.5.
        nonface_fraction: non-face images appended per batch, as a fraction of its size. Default 0.25.

    Shapes: ``forward(x [N,3,S,S]) -> logits [N, A]``; ``features(x) -> [N, feature_dim]``.
    Batches are dicts ``{"image": [B,3,S,S], "attrs": [B, A_data]}``; when the data module exposes
    ``attribute_names`` the columns are matched by name, else they must be in ``attributes`` order.
    """

    phase = "evaluator"

    def __init__(
        self,
        image_size: int = 64,
        attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
        width: int = 32,
        max_width: int = 256,
        norm: str = "batch",
        dropout: float = 0.0,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        threshold: float = 0.5,
        robust: bool = True,
        degrade_prob: float = 0.5,
        nonface_fraction: float = 0.25,
    ) -> None:
        super().__init__()
        attributes = [str(a) for a in attributes]
        if not attributes:
            raise ConfigError("AttributeEvaluator needs at least one attribute name")
        if len(set(attributes)) != len(attributes):
            raise ConfigError(f"attribute names must be unique, got {attributes}")
        self.save_hyperparameters({
            "image_size": int(image_size), "attributes": attributes, "width": int(width), "max_width": int(max_width),
            "norm": norm, "dropout": float(dropout), "lr": float(lr), "weight_decay": float(weight_decay),
            "threshold": float(threshold),
        })
        self.attributes: tuple[str, ...] = tuple(attributes)
        self.image_size = int(image_size)
        self.net = ConvClassifier(image_size, len(attributes), width=width, max_width=max_width, norm=norm, dropout=dropout)
        self.feature_dim = self.net.feature_dim
        self.val_acc = MultilabelAccuracy(num_labels=len(attributes), threshold=threshold, average=None)
        self.val_accuracy: dict[str, float] = {}
        self._columns: list[int] | None = None
        # robustness to what generators produce (training only; see robust_batch)
        if not 0.0 <= float(degrade_prob) <= 1.0:
            raise ConfigError(f"degrade_prob must be in [0, 1], got {degrade_prob}")
        if not 0.0 <= float(nonface_fraction) <= 4.0:
            raise ConfigError(f"nonface_fraction must be in [0, 4] (non-face images per labelled image), got {nonface_fraction}")
        self.hparams.update(robust=bool(robust), degrade_prob=float(degrade_prob), nonface_fraction=float(nonface_fraction))
        #: feature rates on non-face images at the last validation, ``{kind: {attribute: rate}}``
        self.nonface_rates: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ inference
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """Probabilities ``[N, A]`` (CPU, float32) for images ``[N,3,H,W]`` in [-1, 1]; images of
        another size are resized to ``image_size`` (bilinear, antialiased). Runs in eval mode."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        try:
            for i in range(0, images.shape[0], batch_size):
                x = images[i : i + batch_size].float()
                if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
                    x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
                out.append(torch.sigmoid(self(x.to(device))).float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, len(self.attributes))

    # ------------------------------------------------------------------ training
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(dm, "attribute_names", None)
        if names is None:
            self._columns = None
            return
        names = list(names)
        missing = [a for a in self.attributes if a not in names]
        if missing:
            raise ConfigError(f"the data provide attributes {names}; the evaluator asks for {missing} as well")
        self._columns = [names.index(a) for a in self.attributes]

    def _targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        y = batch["attrs"].float()
        if self._columns is not None:
            y = y[:, self._columns]
        if y.shape[1] != len(self.attributes):
            raise ConfigError(f"batch has {y.shape[1]} attribute columns, the evaluator predicts {len(self.attributes)} {list(self.attributes)}")
        return y

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch["image"], self._targets(batch)
        if self.hparams.get("robust", False):
            x, y = robust_batch(x, y, self.hparams.degrade_prob, self.hparams.nonface_fraction)
        logits = self(x)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        self.check_finite(bce=loss)
        self.log("train/bce", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["image"])
        y = self._targets(batch)
        self.log("val/bce", F.binary_cross_entropy_with_logits(logits, y), batch_size=logits.shape[0], prog_bar=True)
        self.val_acc.update(torch.sigmoid(logits), y.long())

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc.reset()
        self.val_accuracy = {a: float(acc[i]) for i, a in enumerate(self.attributes)}
        for a, v in self.val_accuracy.items():
            self.log(f"val/acc_{a}", v)
        self.log("val/acc_min", min(self.val_accuracy.values()), prog_bar=True)
        # a judge must not see features in noise: rates on fixed non-face images (own generator)
        self.nonface_rates = nonface_rates(self, n=32, seed=0)
        worst = max(r for rates in self.nonface_rates.values() for r in rates.values())
        self.log("val/nonface_max_rate", worst)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, betas=(0.5, 0.999), weight_decay=self.hparams.weight_decay)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_metadata(self) -> dict[str, Any]:
        meta = super().checkpoint_metadata()
        meta.update({"attributes": list(self.attributes), "image_size": self.image_size, "val_accuracy": dict(self.val_accuracy),
                     "nonface_rates": {k: dict(v) for k, v in self.nonface_rates.items()}})
        return meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        meta = checkpoint.get("multifeat") or {}
        self.val_accuracy = {str(k): float(v) for k, v in (meta.get("val_accuracy") or {}).items()}
        self.nonface_rates = {str(k): {str(a): float(r) for a, r in v.items()} for k, v in (meta.get("nonface_rates") or {}).items()}


# ---------------------------------------------------------------------- helpers


def evaluator_cache_key(**config: Any) -> str:
    """Short stable hash of a training configuration (names the cached checkpoint)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: version of the evaluator's training recipe, part of every cache key: 2 = robust training (degraded views,
#: non-face negatives); files of an older recipe are never reused.
RECIPE_VERSION = 2


def cached_evaluator_path(prefix: str, config: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/<prefix>-S<size>-<hash of config and the recipe version>.ckpt`` (the cached evaluator's file)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = evaluator_cache_key(**config, version=RECIPE_VERSION)
    return folder / f"{prefix}-S{int(config['image_size'])}-{key}.ckpt"


def default_cache_dir() -> Path:
    """``$MULTIFEAT_CACHE/evaluators`` or ``~/.cache/multifeat/evaluators``."""
    root = os.environ.get("MULTIFEAT_CACHE") or (Path.home() / ".cache" / "multifeat")
    return Path(root) / "evaluators"


def train_evaluator(
    image_size: int = 64,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    max_steps: int = 400,
    seed: int = DEFAULT_EVALUATOR_SEED,
    out_path: str | os.PathLike = "evaluator.ckpt",
    num_samples: int = 4096,
    batch_size: int = 64,
    width: int = 16,
    max_width: int = 64,
    lr: float = 2e-3,
    accelerator: str = "auto",
    enable_progress_bar: bool = False,
    robust: bool = True,
) -> Path:
    """Train an evaluator on SyntheticFaces (all attribute combinations, seed ``seed``) and save it.

    Runs ``max_steps`` optimiser steps, then one validation pass whose per-attribute accuracy (and
    the feature rates on non-face images) are stored in the checkpoint. With ``robust`` (default)
    the batches are :func:`robust_batch` es: degraded views that keep their labels, and non-face
    images that carry no attribute. The checkpoint is written atomically to ``out_path``; returns the path.
    The defaults (width 16, 400 steps) reach about 99 % per attribute at 64 px in a few CPU minutes;
    ``experiments/evaluator.yaml`` trains a larger one.
    """
    import lightning as L

    from multifeat.data import AttributeDataModule

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    L.seed_everything(seed, workers=True, verbose=False)
    dm = AttributeDataModule(source="synthetic", image_size=image_size, attributes=list(attributes), num_samples=num_samples,
                             synthetic={"cache": image_size <= 128}, batch_size=batch_size, seed=seed)
    model = AttributeEvaluator(image_size=image_size, attributes=attributes, width=width, max_width=max_width, lr=lr, robust=robust)
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(out.parent),
    )
    trainer.fit(model, datamodule=dm)
    trainer.validate(model, datamodule=dm, verbose=False)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        trainer.save_checkpoint(tmp, weights_only=True)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def load_evaluator(path: str | os.PathLike, map_location: Any = "cpu") -> AttributeEvaluator:
    """Load an evaluator checkpoint (eval mode). Raises :class:`CheckpointError` naming the path if the
    file is missing, unreadable or not an evaluator checkpoint."""
    from multifeat.io.checkpoints import load_phase_module

    module = load_phase_module(path, expect_phase="evaluator", map_location=map_location)
    if not isinstance(module, AttributeEvaluator):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(module).__name__}, expected an AttributeEvaluator")
    module.checkpoint_path = str(path)
    return module


def cached_evaluator(
    image_size: int,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    cache_dir: str | os.PathLike | None = None,
    seed: int = DEFAULT_EVALUATOR_SEED,
    max_steps: int = 400,
    num_samples: int = 4096,
    width: int = 16,
    max_width: int = 64,
    log=print,
) -> tuple[AttributeEvaluator, Path]:
    """Load the evaluator for this configuration from the cache, training it first if it is not there.

    The file is ``<cache_dir>/evaluator-S<size>-<hash of the config>.ckpt``.
    """
    cfg = {"image_size": int(image_size), "attributes": list(attributes), "seed": int(seed), "max_steps": int(max_steps),
           "num_samples": int(num_samples), "width": int(width), "max_width": int(max_width)}
    path = cached_evaluator_path("evaluator", cfg, cache_dir)
    if not path.is_file():
        ensure_writable_dir(path.parent)
        if log:
            log(f"training an attribute evaluator ({image_size}px, {max_steps} steps, SyntheticFaces seed {seed}) -> {path}")
        train_evaluator(image_size=image_size, attributes=attributes, max_steps=max_steps, seed=seed, out_path=path,
                        num_samples=num_samples, width=width, max_width=max_width)
    return load_evaluator(path), path


def cached_celeba_evaluator(
    root: str | os.PathLike,
    image_size: int,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    cache_dir: str | os.PathLike | None = None,
    max_steps: int = 400,
    width: int = 16,
    max_width: int = 64,
    batch_size: int = 64,
    seed: int = DEFAULT_EVALUATOR_SEED,
    accelerator: str = "auto",
    log: Callable[[str], None] | None = print,
):
    """An :class:`AttributeEvaluator` trained on the CelebA copy under ``root`` (cached; trained on first use).

    The file is ``<cache_dir>/evaluator-celeba-S<size>-<hash>.ckpt``; the hash covers the absolute
    root, the size, the attributes and the training settings. The checkpoint records its data source
    (``multifeat.data_source``), which :func:`check_evaluator_matches` compares. Returns (evaluator, path).
    """
    import lightning as L

    from multifeat.data import AttributeDataModule

    root_abs = str(Path(root).expanduser().resolve())
    cfg = {"source": "celeba", "root": root_abs, "image_size": int(image_size), "attributes": list(attributes),
           "seed": int(seed), "max_steps": int(max_steps), "width": int(width), "max_width": int(max_width),
           "batch_size": int(batch_size)}
    path = cached_evaluator_path("evaluator-celeba", cfg, cache_dir)
    if not path.is_file():
        ensure_writable_dir(path.parent)
        if log:
            log(f"training a CelebA attribute evaluator ({image_size}px, {max_steps} steps, CelebA under {root_abs}) -> {path}")
        L.seed_everything(seed, workers=True, verbose=False)
        dm = AttributeDataModule(source="celeba", root=str(root), image_size=int(image_size), attributes=list(attributes),
                                 batch_size=batch_size, seed=seed, val_fraction=0.1)
        model = AttributeEvaluator(image_size=int(image_size), attributes=list(attributes), width=width, max_width=max_width)
        trainer = L.Trainer(max_steps=max_steps, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            default_root_dir=str(path.parent))
        trainer.fit(model, datamodule=dm)
        trainer.validate(model, datamodule=dm, verbose=False)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            trainer.save_checkpoint(tmp, weights_only=True)
            # record the data source where every multifeat checkpoint keeps its metadata
            from multifeat.io.checkpoints import load_checkpoint

            ckpt = load_checkpoint(tmp)  # weights-only read of the file written just above
            ckpt.setdefault("multifeat", {})["data_source"] = {"source": "celeba", "root": root_abs}
            buf = io.BytesIO()
            torch.save(ckpt, buf)
            atomic_write_bytes(path, buf.getvalue())
        finally:
            if tmp.exists():
                tmp.unlink()
    return load_evaluator(path), path


__all__ = [
    "AttributeEvaluator",
    "DEFAULT_ATTRIBUTES",
    "DEFAULT_EVALUATOR_SEED",
    "RECIPE_VERSION",
    "cached_celeba_evaluator",
    "cached_evaluator",
    "cached_evaluator_path",
    "default_cache_dir",
    "evaluator_cache_key",
    "load_evaluator",
    "train_evaluator",
]
