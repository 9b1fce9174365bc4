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
:mod:`multifeat.eval.judge_data`. For real faces, ``geometric`` adds zoomed, moved and turned views
(labels kept), so the judge does not read features at fixed positions of its training frame.

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
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MultilabelAccuracy

from multifeat.errors import CheckpointError, ConfigError
from multifeat.eval import judge_data as jd
from multifeat.eval.immature import (
    IMMATURE_SEED,
    IMMATURE_STEPS,
    ImmatureBank,
    check_immature_steps,
    immature_bank,
    immature_batch,
)
from multifeat.eval.judge_data import auroc_per_column, balanced_accuracy, nonface_rates, robust_batch
from multifeat.nets.classifier import ConvClassifier
from multifeat.phases.base import PhaseModule
from multifeat.utils.files import atomic_write_bytes

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
        immature_fraction: samples of briefly trained generators appended per batch, as a fraction of
            its size (:mod:`multifeat.eval.immature`): each is a negative of the feature its generator
            never saw, its other attributes masked out of the loss. None (default): 0.25 when the data
            module serves SyntheticFaces (the generators are SyntheticFaces generators), else 0.
        immature_steps: batches after which those generators are sampled.
        immature_seed: seed of the generators' bank.
        balance: weight each attribute's positives by (negatives / positives) of the training data
            (capped at 50) in the loss, so a rare attribute (CelebA's ``bald``: 4.5 %) is learned; the
            data module must offer ``positive_rates()`` (:class:`multifeat.eval.judge_celeba.EvaluatorDataModule`).
        geometric: probability that a labelled training face is replaced by a
            :func:`~multifeat.eval.judge_data.geometric_views` view (zoomed by a factor in ``geometric_scale``,
            moved by up to ``geometric_shift`` of the side per axis, turned by up to ``geometric_rotate``
            degrees), labels kept. Default 0 (off: nothing is drawn and the recipe is unchanged).
        lr_cosine: lower the learning rate along a cosine from ``lr`` to ``lr / 20`` over the trainer's
            ``max_steps`` (which must then be set). Default False (constant).
        hflip: probability that a labelled training face is mirrored left-right (labels kept: a face and
            its mirror image carry the same attributes). Default 0 (off: nothing is drawn).

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
        immature_fraction: float | None = None,
        immature_steps: Sequence[int] = IMMATURE_STEPS,
        immature_seed: int = IMMATURE_SEED,
        balance: bool = False,
        geometric: float = 0.0,
        geometric_scale: Sequence[float] = jd.GEOMETRIC_SCALE,
        geometric_shift: float = jd.GEOMETRIC_SHIFT,
        geometric_rotate: float = jd.GEOMETRIC_ROTATE,
        lr_cosine: bool = False,
        hflip: float = 0.0,
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
        if immature_fraction is not None and not 0.0 <= float(immature_fraction) <= 4.0:
            raise ConfigError(f"immature_fraction must be in [0, 4] (generator samples per labelled image) or null, got {immature_fraction}")
        self.hparams.update(immature_fraction=None if immature_fraction is None else float(immature_fraction),
                            immature_steps=list(check_immature_steps(immature_steps)), immature_seed=int(immature_seed),
                            balance=bool(balance))
        #: (probability, (low, high) zoom, shift, degrees) of the geometric views; recorded only when on
        self.geometric = jd.check_geometric(geometric, geometric_scale, geometric_shift, geometric_rotate)
        if self.geometric[0] > 0:
            self.hparams.update(geometric=self.geometric[0], geometric_scale=list(self.geometric[1]),
                                geometric_shift=self.geometric[2], geometric_rotate=self.geometric[3])
        if lr_cosine:  # recorded only when on, as the geometric views
            self.hparams.update(lr_cosine=True)
        if not 0.0 <= float(hflip) <= 1.0:
            raise ConfigError(f"hflip is the probability of mirroring a training face and must be in [0, 1], got {hflip}")
        self.hflip = float(hflip)
        if self.hflip > 0:  # recorded only when on
            self.hparams.update(hflip=self.hflip)
        #: per-attribute weight of the positives in the loss (``balance``), set at fit start
        self.pos_weight: torch.Tensor | None = None
        self._outputs: dict[str, list[torch.Tensor]] = {"val": [], "test": []}
        #: the immature-generator fraction in use (``immature_fraction`` resolved at fit start)
        self.immature_in_use: float = 0.0
        self._immature: ImmatureBank | None = None
        #: where the immature-generator bank is cached (None: :func:`default_cache_dir`)
        self.immature_cache_dir: str | os.PathLike | None = None
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
        if stage == "fit":
            self._setup_immature(getattr(dm, "source", None))
        names = getattr(dm, "attribute_names", None)
        if stage == "fit" and self.hparams.get("balance", False):
            if not callable(getattr(dm, "positive_rates", None)):
                raise ConfigError("balance: true needs a data module with positive_rates() "
                                  "(multifeat.eval.judge_celeba.EvaluatorDataModule); got " + type(dm).__name__)
            rates = dm.positive_rates()
            missing = [a for a in self.attributes if a not in rates]
            if missing:
                raise ConfigError(f"balance: the data module gives no positive rate for {missing}")
            self.pos_weight = torch.tensor([min(50.0, max(1.0, (1 - rates[a]) / max(rates[a], 1e-6))) for a in self.attributes])
        if names is None:
            self._columns = None
            return
        names = list(names)
        missing = [a for a in self.attributes if a not in names]
        if missing:
            raise ConfigError(f"the data provide attributes {names}; the evaluator asks for {missing} as well")
        self._columns = [names.index(a) for a in self.attributes]

    def _setup_immature(self, source: str | None) -> None:
        frac = self.hparams.get("immature_fraction")
        if frac is None:
            frac = 0.25 if source == "synthetic" else 0.0
        self.immature_in_use = float(frac) if self.hparams.get("robust", False) else 0.0
        if self.immature_in_use > 0 and self._immature is None:
            self._immature = immature_bank(self.image_size, seed=self.hparams.immature_seed, steps=self.hparams.immature_steps,
                                           cache_dir=self.immature_cache_dir or default_cache_dir())

    def _targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        y = batch["attrs"].float()
        if self._columns is not None:
            y = y[:, self._columns]
        if y.shape[1] != len(self.attributes):
            raise ConfigError(f"batch has {y.shape[1]} attribute columns, the evaluator predicts {len(self.attributes)} {list(self.attributes)}")
        return y

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch["image"], self._targets(batch)
        mask = None
        if self.hflip > 0:
            x = jd.mirrored(x, self.hflip)
        if self.geometric[0] > 0:  # before the degradations: a zoomed face may then also be blurred
            x = jd.geometric_views(x, *self.geometric)
        if self.hparams.get("robust", False):
            x, y = robust_batch(x, y, self.hparams.degrade_prob, self.hparams.nonface_fraction)
            m = int(round(self.immature_in_use * batch["image"].shape[0]))
            if m > 0 and self._immature is not None:
                xi, yi, mi = immature_batch(self._immature, m, self.attributes)
                mask = torch.cat([torch.ones_like(y), mi.to(y)])
                x, y = torch.cat([x, xi.to(x)]), torch.cat([y, yi.to(y)])
        logits = self(x)
        pw = None if self.pos_weight is None else self.pos_weight.to(logits)
        if mask is None:
            loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pw)
        else:  # the generator samples count only in the column of the feature their generator never saw
            loss = (F.binary_cross_entropy_with_logits(logits, y, reduction="none", pos_weight=pw) * mask).sum() / mask.sum()
        self.check_finite(bce=loss)
        self.log("train/bce", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["image"])
        y = self._targets(batch)
        self.log("val/bce", F.binary_cross_entropy_with_logits(logits, y), batch_size=logits.shape[0], prog_bar=True)
        self.val_acc.update(torch.sigmoid(logits), y.long())
        self._outputs["val"].append(torch.cat([torch.sigmoid(logits).detach().float().cpu(), y.float().cpu()], 1))

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Collects probabilities and labels; the epoch end logs ``test/bacc/<attribute>`` (balanced
        accuracy at ``threshold``) with its 95 % interval ``test/bacc_lo/<attribute>``, ``test/bacc_hi/<attribute>``
        (:func:`~multifeat.eval.judge_data.balanced_accuracy_interval`), ``test/auroc/<attribute>`` and ``test/acc/<attribute>``."""
        y = self._targets(batch)
        p = torch.sigmoid(self(batch["image"]))
        self._outputs["test"].append(torch.cat([p.detach().float().cpu(), y.float().cpu()], 1))

    def on_test_epoch_start(self) -> None:
        self._outputs["test"] = []

    def on_validation_epoch_start(self) -> None:
        self._outputs["val"] = []

    def _collected(self, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.cat(self._outputs[stage]) if self._outputs[stage] else torch.zeros(0, 2 * len(self.attributes))
        self._outputs[stage] = []
        a = len(self.attributes)
        return out[:, :a], out[:, a:]

    def on_test_epoch_end(self) -> None:
        probs, targets = self._collected("test")
        th = float(self.hparams.threshold)
        bacc = balanced_accuracy(probs, targets, th)
        auroc = auroc_per_column(probs, targets)
        interval = jd.balanced_accuracy_interval(probs, targets, th)
        acc = ((probs >= th) == (targets >= 0.5)).float().mean(0) if probs.shape[0] else torch.full((len(self.attributes),), float("nan"))
        for i, a in enumerate(self.attributes):
            self.log(f"test/bacc/{a}", bacc[i])
            self.log(f"test/bacc_lo/{a}", interval[i][0])
            self.log(f"test/bacc_hi/{a}", interval[i][1])
            self.log(f"test/auroc/{a}", auroc[i])
            self.log(f"test/acc/{a}", float(acc[i]))

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc.reset()
        self.val_accuracy = {a: float(acc[i]) for i, a in enumerate(self.attributes)}
        for a, v in self.val_accuracy.items():
            self.log(f"val/acc_{a}", v)
        self.log("val/acc_min", min(self.val_accuracy.values()), prog_bar=True)
        probs, targets = self._collected("val")
        bacc = [b for b in balanced_accuracy(probs, targets, float(self.hparams.threshold))]
        for a, b in zip(self.attributes, bacc):
            self.log(f"val/bacc_{a}", b)
        present = [b for b in bacc if b == b]  # an attribute with one class only in the data has no balanced accuracy
        if present:
            self.log("val/bacc_min", min(present))
        # a judge must not see features in noise: rates on fixed non-face images (own generator)
        self.nonface_rates = nonface_rates(self, n=32, seed=0)
        worst = max(r for rates in self.nonface_rates.values() for r in rates.values())
        self.log("val/nonface_max_rate", worst)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, betas=(0.5, 0.999), weight_decay=self.hparams.weight_decay)
        if not self.hparams.get("lr_cosine", False):
            return opt
        steps = int(getattr(self.trainer, "max_steps", -1) or -1)
        if steps <= 0:
            raise ConfigError(f"lr_cosine: true needs trainer.max_steps > 0 (the length of the cosine), got {steps}")
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=self.hparams.lr / 20)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_metadata(self) -> dict[str, Any]:
        meta = super().checkpoint_metadata()
        meta.update({"attributes": list(self.attributes), "image_size": self.image_size, "val_accuracy": dict(self.val_accuracy),
                     "recipe": {"version": RECIPE_VERSION, "robust": bool(self.hparams.get("robust", False)),
                                "immature_fraction": self.immature_in_use,
                                "pos_weight": None if self.pos_weight is None else [float(v) for v in self.pos_weight],
                                **({"geometric": [self.geometric[0], list(self.geometric[1]), *self.geometric[2:]]}
                                   if self.geometric[0] > 0 else {}),
                                **({"hflip": self.hflip} if self.hflip > 0 else {})},
                     "nonface_rates": {k: dict(v) for k, v in self.nonface_rates.items()}})
        return meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.restore_metadata(checkpoint.get("multifeat") or {})

    def restore_metadata(self, meta: dict[str, Any]) -> None:
        """Set what a file records beside the weights: validation accuracy, non-face rates and the
        immature-generator fraction it was trained with (an explicit number in the hyper-parameters is
        what training used when robust; otherwise, null decided by the data source, the recorded one;
        files written from a loaded module before this was restored recorded 0.0)."""
        self.val_accuracy = {str(k): float(v) for k, v in (meta.get("val_accuracy") or {}).items()}
        self.nonface_rates = {str(k): {str(a): float(r) for a, r in v.items()} for k, v in (meta.get("nonface_rates") or {}).items()}
        frac = self.hparams.get("immature_fraction")
        if self.hparams.get("robust", False) and frac is not None:
            self.immature_in_use = float(frac)
        else:
            self.immature_in_use = float((meta.get("recipe") or {}).get("immature_fraction") or 0.0)


# ---------------------------------------------------------------------- training and files


#: version of the evaluator's training recipe, part of every cache key: 2 = robust training (degraded views,
#: non-face negatives); 3 = also immature-generator negatives (:mod:`multifeat.eval.immature`); 4 = their
#: bank of version 2 (more generators, sampled up to the demo's phase-1 length, live and EMA); files of an
#: older recipe are never reused.
RECIPE_VERSION = 4


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
    immature_fraction: float | None = None,
    immature_steps: Sequence[int] = IMMATURE_STEPS,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Train an evaluator on SyntheticFaces (all attribute combinations, seed ``seed``) and save it.

    Runs ``max_steps`` optimiser steps, then one validation pass whose per-attribute accuracy (and
    the feature rates on non-face images) are stored in the checkpoint. With ``robust`` (default)
    the batches are :func:`robust_batch` es: degraded views that keep their labels, and non-face
    images that carry no attribute, and samples of briefly trained generators that are negatives of the
    feature their generator never saw (``immature_fraction``, ``immature_steps``; their bank is cached
    in ``cache_dir``, default :func:`default_cache_dir`). The checkpoint is written atomically to
    ``out_path``; returns the path.
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
    model = AttributeEvaluator(image_size=image_size, attributes=attributes, width=width, max_width=max_width, lr=lr, robust=robust,
                               immature_fraction=immature_fraction, immature_steps=immature_steps)
    model.immature_cache_dir = cache_dir
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


#: ``format`` of a weights-only evaluator file (:func:`save_evaluator_weights`), as the package ships them.
WEIGHTS_FORMAT = "multifeat-evaluator-weights/1"


def save_evaluator_weights(module: AttributeEvaluator, path: str | os.PathLike, data_source: str = "synthetic") -> str:
    """Write ``module`` as a weights-only file (float32 tensors, hyper-parameters, the metadata an
    evaluation report quotes; no optimiser or loop state) atomically to ``path``; returns its SHA-256."""
    meta = module.checkpoint_metadata()
    meta["data_source"] = {"source": data_source, "root": None}
    hp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(module.hparams).items()}
    payload = {"format": WEIGHTS_FORMAT, "hyper_parameters": hp, "multifeat": meta,
               "state_dict": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _load_weights_file(ckpt: dict[str, Any], path: str | os.PathLike) -> AttributeEvaluator:
    hp = dict(ckpt.get("hyper_parameters") or {})
    try:
        module = AttributeEvaluator(**hp)
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except (TypeError, KeyError, RuntimeError, ConfigError) as e:
        raise CheckpointError(f"evaluator weights '{path}' do not match AttributeEvaluator: {str(e).splitlines()[0][:300]}") from e
    module.restore_metadata(ckpt.get("multifeat") or {})
    return module.eval()


def load_evaluator(path: str | os.PathLike, map_location: Any = "cpu") -> AttributeEvaluator:
    """Load an evaluator checkpoint or weights-only file (eval mode). Raises :class:`CheckpointError`
    naming the path if the file is missing, unreadable or not an evaluator."""
    from multifeat.io.checkpoints import load_checkpoint, load_phase_module

    ckpt = load_checkpoint(path, expect_phase="evaluator", map_location=map_location)
    if ckpt.get("format") == WEIGHTS_FORMAT:
        module = _load_weights_file(ckpt, path)
    else:
        module = load_phase_module(path, expect_phase="evaluator", map_location=map_location)
    if not isinstance(module, AttributeEvaluator):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(module).__name__}, expected an AttributeEvaluator")
    module.checkpoint_path = str(path)
    return module


__all__ = [
    "AttributeEvaluator",
    "DEFAULT_ATTRIBUTES",
    "DEFAULT_EVALUATOR_SEED",
    "RECIPE_VERSION",
    "WEIGHTS_FORMAT",
    "default_cache_dir",
    "load_evaluator",
    "save_evaluator_weights",
    "train_evaluator",
]
