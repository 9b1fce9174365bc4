"""Base class of the package's LightningModules.

It adds what every phase needs beyond Lightning:

- ``checkpoint["multifeat"]``: class path, phase name and image size, so any checkpoint can be
  identified and reloaded (:func:`multifeat.io.checkpoints.load_phase_module`);
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
from multifeat.errors import NonFiniteLossError


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

    def check_finite(self, **terms: torch.Tensor) -> None:
        """Raise :class:`NonFiniteLossError` if any named loss term is NaN or Inf."""
        for name, value in terms.items():
            if value is not None and not bool(torch.isfinite(value.detach()).all()):
                raise NonFiniteLossError(
                    f"{self.phase}: loss term '{name}' became {value.detach().float().flatten()[0].item()} at global step "
                    f"{self.global_step} (epoch {self.current_epoch}); training stopped and the last saved checkpoint "
                    f"is unchanged. Try a lower learning rate, precision 32, or check the input data."
                )
