"""Method A, Phase 2: the feature classifier D2.

``D2(x) = sigmoid(ConvClassifier(x))`` in [0, 1] is the probability that image ``x`` carries
feature 1. It is trained with the paper's squared error (or BCE) on probabilities::

    L_D2 = mean((D2(x) - 1)²) + mean(D2(y)²)      x: positives, y: negatives of every source

The negatives mix real images without the feature, Phase 1's unclear samples (the negative bank)
and degraded copies of positives (:class:`multifeat.data.FeatureClassifierDataModule`), so D2 learns
that blurry, noisy or low-resolution images do not carry the feature. Phase 3 then uses the frozen
D2 to keep feature 1 in G3's images.

Batches: ``{"image": [B, 3, S, S] in [-1, 1], "label": float [B] 1/0, "source": long [B]}`` with
source ids in :data:`SOURCE_NAMES` order.

Logged: ``loss/train`` (progress bar), ``train/acc`` (on the steps the logger writes); in validation (and test, with prefix
``test/``): ``loss/val``, ``val/acc``, ``val/auroc`` (all sources), ``val/acc/positive`` (positives
judged positive), and for each negative source present ``val/acc/<source>`` (its images judged
negative) and ``val/auroc/<source>`` (positives against that source only).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from multifeat.errors import ConfigError
from multifeat.losses import classifier_loss
from multifeat.nets.classifier import ConvClassifier
from multifeat.nets.dcgan import check_image_size
from multifeat.phases.base import PhaseModule
from multifeat.phases.phase1 import should_log_step

# Source ids of FeatureClassifierDataModule batches (multifeat.data.SOURCE_NAMES).
SOURCE_NAMES = ("positive", "real_negative", "bank", "degraded")
LOSS_KINDS = ("mse", "bce")
LR_SCHEDULES = ("constant", "cosine")


class FeatureClassifier(PhaseModule):
    """D2: does an image carry ``feature``? ``forward(x) -> probabilities [N]``.

    Args:
        image_size: image side S (power of two, 16-256). Default 64. Phase 3 refuses a D2 whose
            image size differs from its own.
        feature: name of the feature (e.g. ``bald``); stored in the checkpoint. Default ``bald``.
        width, max_width, norm, dropout: the :class:`~multifeat.nets.classifier.ConvClassifier`
            (defaults 32, 256, ``batch``, 0.0).
        loss: ``mse`` (the paper's squared error) or ``bce``. Default ``mse``.
        lr: Adam learning rate. Default 2e-4.
        betas: Adam betas. Default (0.9, 0.999).
        weight_decay: Adam weight decay. Default 0.
        lr_schedule: ``constant`` or ``cosine`` (annealed to 0 over the run's optimizer steps, which
            steadies the last epoch's figures). Default ``constant``.
        threshold: probability above which an image counts as positive in the accuracies. Default 0.5.
        source_names: names of the source ids in batches. Default :data:`SOURCE_NAMES`.
        classifier: a ready network ``[N, 3, S, S] -> logits [N, 1]`` (or ``[N]``) replacing the built
            one; not stored in hparams (pass it again to ``load_from_checkpoint``).
    """

    phase = "phase2"

    def __init__(
        self,
        image_size: int = 64,
        feature: str = "bald",
        width: int = 32,
        max_width: int = 256,
        norm: str = "batch",
        dropout: float = 0.0,
        loss: str = "mse",
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        threshold: float = 0.5,
        source_names: tuple[str, ...] = SOURCE_NAMES,
        classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        check_image_size(image_size)
        if loss not in LOSS_KINDS:
            raise ConfigError(f"loss must be one of {LOSS_KINDS}, got {loss!r}")
        if not lr > 0:
            raise ConfigError(f"lr must be > 0, got {lr}")
        if lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
        if not feature or not isinstance(feature, str):
            raise ConfigError(f"feature must be a non-empty attribute name, got {feature!r}")
        names = tuple(str(n) for n in source_names)
        if not names or names[0] != "positive" or len(set(names)) != len(names):
            raise ConfigError(f"source_names must start with 'positive' and be unique, got {list(source_names)}")
        self.save_hyperparameters(ignore=["classifier"])
        self.hparams.update(betas=[float(b) for b in betas], source_names=list(names),
                            custom_classifier=classifier is not None)
        self.classifier = classifier if classifier is not None else ConvClassifier(
            image_size=image_size, num_outputs=1, width=width, max_width=max_width, norm=norm, dropout=dropout
        )
        self.source_names = names
        self._metrics = nn.ModuleDict({stage: self._make_metrics(threshold) for stage in ("val", "test")})
        self._counts: dict[str, torch.Tensor] = {}  # items per source id seen in the running eval epoch

    def _make_metrics(self, threshold: float) -> nn.ModuleDict:
        m = nn.ModuleDict({"acc": BinaryAccuracy(threshold=threshold), "auroc": BinaryAUROC()})
        for name in self.source_names:
            m[f"acc_{name}"] = BinaryAccuracy(threshold=threshold)
            if name != "positive":
                m[f"auroc_{name}"] = BinaryAUROC()
        return m

    def checkpoint_metadata(self) -> dict[str, Any]:
        return {**super().checkpoint_metadata(), "feature": self.hparams.feature}

    # ------------------------------------------------------------------------------------- inference
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw scores [N] for images [N, 3, S, S] in [-1, 1]."""
        out = self.classifier(x)
        return out if out.ndim == 1 else out.flatten(1)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """D2(x): probabilities [N] in [0, 1] (differentiable; current train/eval mode)."""
        return torch.sigmoid(self.logits(x))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """D2(x) [N] in eval mode, in chunks of ``batch_size``; the training mode is restored."""
        if x.shape[0] == 0:
            return x.new_zeros(0)
        was_training = self.training
        self.eval()
        try:
            out = [self(chunk.to(self.device)) for chunk in x.split(batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch["image"] if isinstance(batch, dict) else batch[0] if isinstance(batch, (list, tuple)) else batch)

    # ------------------------------------------------------------------------------------- training
    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.Adam(self.classifier.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        if hp.lr_schedule == "constant":
            return opt
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def loss(self, p: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """:func:`multifeat.losses.classifier_loss` on the batch's positives and negatives.

        A batch without positives (or without negatives) gets only the other set's term.
        """
        pos = label > 0.5
        p_pos, p_neg = p[pos], p[~pos]
        if p_pos.numel() == 0:
            p_pos = p.new_ones(1)  # contributes nothing (zero error, no gradient)
        if p_neg.numel() == 0:
            p_neg = p.new_zeros(1)
        return classifier_loss(p_pos, p_neg, kind=self.hparams.loss)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, label = batch["image"], batch["label"].float()
        p = self(x)
        loss = self.loss(p, label)
        self.check_finite(loss=loss)
        if should_log_step(self):
            self.log("loss/train", loss.detach(), prog_bar=True)
            self.log("train/acc", ((p.detach() > self.hparams.threshold) == (label > 0.5)).float().mean())
        return loss

    def _eval_step(self, batch: dict, stage: str) -> torch.Tensor:
        x, label, source = batch["image"], batch["label"].float(), batch["source"].long()
        p = self(x).detach().float()
        loss = self.loss(p, label)
        self.log(f"loss/{stage}", loss, prog_bar=stage == "val", batch_size=x.shape[0])
        target = (label > 0.5).long()
        k = len(self.source_names)
        counts = torch.bincount(source.clamp(0, k), minlength=k + 1)[:k]
        self._counts[stage] = counts if self._counts.get(stage) is None else self._counts[stage] + counts
        m = self._metrics[stage]
        m["acc"].update(p, target)
        m["auroc"].update(p, target)
        pos = target == 1
        for sid, name in enumerate(self.source_names):  # (torchmetrics refuses empty updates)
            sel = source == sid
            if bool(sel.any()):
                m[f"acc_{name}"].update(p[sel], target[sel])
            if name != "positive":
                both = sel | pos  # every positive of the epoch against this source
                if bool(both.any()):
                    m[f"auroc_{name}"].update(p[both], target[both])
        return loss

    def _eval_epoch_end(self, stage: str) -> None:
        m = self._metrics[stage]
        counts = self._counts.pop(stage, None)
        if counts is None:
            counts = torch.zeros(len(self.source_names), dtype=torch.long, device=self.device)
        if self._trainer is not None:  # the same decisions on every process (compute() synchronises)
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        n = [int(c) for c in counts.tolist()]
        has_pos, has_neg = n[0] > 0, sum(n[1:]) > 0
        wanted = {"acc": sum(n) > 0, "auroc": has_pos and has_neg}
        for sid, name in enumerate(self.source_names):
            wanted[f"acc_{name}"] = n[sid] > 0
            if name != "positive":
                wanted[f"auroc_{name}"] = has_pos and n[sid] > 0  # AUROC needs both classes
        for key, metric in m.items():
            if wanted[key]:
                kind, _, source = key.partition("_")
                name = f"{stage}/{kind}" + (f"/{source}" if source else "")
                self.log(name, metric.compute(), prog_bar=key == "acc" and stage == "val")
            metric.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
