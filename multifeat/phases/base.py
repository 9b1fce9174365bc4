"""Base class of the package's LightningModules.

It adds what every phase needs beyond Lightning:

- ``checkpoint["multifeat"]``: class path, phase name and image size, so any checkpoint can be
  identified and reloaded (:func:`multifeat.io.checkpoints.load_phase_module`);
- exact resume: :meth:`configure_callbacks` attaches :class:`~multifeat.callbacks.rng_state.RNGState`,
  which stores the random states (torch, CUDA, numpy, python, data-loader generators) in every
  checkpoint and restores them, so a resumed fit matches an uninterrupted one bit for bit;
- :meth:`check_finite`: the non-finite guard. A NaN/Inf loss stops training with a message naming
  the phase, the step and the loss term; no checkpoint is written for the bad step, so the last good
  one stays intact.

Generators additionally implement ``sample(n, seed=None) -> Tensor [n, 3, S, S] in [-1, 1]``, which
``multifeat generate`` and ``multifeat evaluate`` call on any checkpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule

import multifeat
from multifeat.callbacks.rng_state import RNGState
from multifeat.errors import CheckpointError, ConfigError, NonFiniteLossError


def should_log_step(module: Any) -> bool:
    """Whether this training step's scalars reach the logger (every ``log_every_n_steps`` batches).

    ``self.log`` costs a few hundred microseconds of Python per call; skipping it on the steps the
    logger does not write keeps a small step close to a plain PyTorch loop. Call it at the start of
    ``training_step`` (before the step is counted). Without a trainer it returns True.
    """
    trainer = getattr(module, "_trainer", None)
    if trainer is None:
        return True
    if trainer.fast_dev_run:
        return True
    n = trainer.log_every_n_steps
    return n > 0 and (trainer.global_step + 1) % n == 0


class PhaseModule(LightningModule):
    """LightningModule with checkpoint metadata and a non-finite loss guard."""

    phase: ClassVar[str] = "module"

    def checkpoint_metadata(self) -> dict[str, Any]:
        cls = type(self)
        return {
            "class_path": f"{cls.__module__}.{cls.__qualname__}",
            "phase": self.phase,
            "image_size": self.hparams.get("image_size") if hasattr(self, "hparams") else None,
            "version": multifeat.__version__,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["multifeat"] = self.checkpoint_metadata()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse (with :class:`CheckpointError`) a checkpoint of another phase or image size before
        Lightning copies its weights, instead of a state-dict mismatch deep inside torch."""
        meta = checkpoint.get("multifeat")
        if not isinstance(meta, dict):
            return
        phase = meta.get("phase")
        if phase is not None and phase != self.phase:
            raise CheckpointError(
                f"the checkpoint being loaded was written by {phase} ({meta.get('class_path')}); "
                f"this is {type(self).__name__} ({self.phase}): give a {self.phase} checkpoint"
            )
        size = meta.get("image_size")
        mine = self.hparams.get("image_size") if hasattr(self, "hparams") else None
        if size is not None and mine is not None and int(size) != int(mine):
            raise CheckpointError(
                f"the checkpoint being loaded holds a {self.phase} model for {size}x{size} images; "
                f"this {type(self).__name__} is configured for {mine}x{mine} (set image_size: {size})"
            )

    def on_fit_start(self) -> None:
        self.check_data_image_size()

    def check_data_image_size(self) -> None:
        """Refuse data whose image size differs from the module's (it would train on the wrong
        images silently or fail deep inside a convolution)."""
        dm = getattr(self.trainer, "datamodule", None)
        size = getattr(dm, "image_size", None) if dm is not None else None
        mine = self.hparams.get("image_size") if hasattr(self, "hparams") else None
        if size is not None and mine is not None and int(size) != int(mine):
            raise ConfigError(
                f"the data module serves {size}x{size} images but {type(self).__name__} is configured for "
                f"{mine}x{mine}; set the same image_size for model and data (model: {mine}, data: {size})"
            )

    def configure_callbacks(self):
        """Callbacks every phase needs: :class:`~multifeat.callbacks.rng_state.RNGState` (exact resume).

        Subclasses that add their own should extend ``super().configure_callbacks()``.
        """
        return [RNGState()]

    def check_finite(self, **terms: torch.Tensor) -> None:
        """Raise :class:`NonFiniteLossError` if any named loss term is NaN or Inf."""
        for name, value in terms.items():
            if value is not None and not bool(torch.isfinite(value.detach()).all()):
                raise NonFiniteLossError(
                    f"{self.phase}: loss term '{name}' became {value.detach().float().flatten()[0].item()} at global step "
                    f"{self.global_step} (epoch {self.current_epoch}); training stopped and the last saved checkpoint "
                    f"is unchanged. Try a lower learning rate, precision 32, or check the input data."
                )
