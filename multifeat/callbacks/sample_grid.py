"""Write sample grids of a generator during training (any module with ``sample_fixed`` or ``sample``).

Every ``every_n_steps`` steps, every ``every_n_epochs`` epochs and at the end of fit, the callback
draws the module's fixed-noise samples (``pl_module.sample_fixed()``, or ``pl_module.sample(n,
seed)`` when the module has no fixed noise), writes them as one PNG grid to
``<dirpath>/step_XXXXXXXX.png`` (the global step, 8 digits) and copies it to ``<dirpath>/latest.png``,
both atomically, and logs it as image ``<key>`` to a W&B logger. Other loggers get no image (a debug
message says so). Only global rank 0 samples and writes.

Default folder: ``<trainer.log_dir or default_root_dir>/samples``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from multifeat.errors import ConfigError
from multifeat.utils.images import make_grid, save_image, to_uint8

log = logging.getLogger(__name__)


class SampleGrid(Callback):
    """Sample grids to PNG files and to the logger.

    Args:
        every_n_steps: write a grid when ``global_step`` is a multiple of this (after the batch);
            None or 0 disables. Default 500.
        every_n_epochs: write a grid after every n-th training epoch; None or 0 disables. Default None.
        num_samples: how many images per grid; None uses all of the module's fixed noise
            (``sample_fixed()``) or 64 for ``sample()``. Default None.
        seed: seed for ``sample(n, seed)`` when the module has no ``sample_fixed``. Default 0.
        nrow: images per grid row; None makes the grid square. Default None.
        upscale: integer nearest-neighbour enlargement of the grid (for small images). Default 1.
        dirpath: output folder; None uses ``<trainer.log_dir or default_root_dir>/samples``.
        key: image name in the logger. Default ``samples``.
        on_fit_end: also write a grid when fit ends. Default True.
    """

    def __init__(
        self,
        every_n_steps: int | None = 500,
        every_n_epochs: int | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        nrow: int | None = None,
        upscale: int = 1,
        dirpath: str | None = None,
        key: str = "samples",
        on_fit_end: bool = True,
    ) -> None:
        super().__init__()
        for name, v in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if v is not None and v < 0:
                raise ConfigError(f"SampleGrid.{name} must be >= 0 or null, got {v}")
        if num_samples is not None and num_samples < 1:
            raise ConfigError(f"SampleGrid.num_samples must be >= 1 or null, got {num_samples}")
        if upscale < 1:
            raise ConfigError(f"SampleGrid.upscale must be >= 1, got {upscale}")
        self.every_n_steps = every_n_steps or 0
        self.every_n_epochs = every_n_epochs or 0
        self.num_samples = num_samples
        self.seed = seed
        self.nrow = nrow
        self.upscale = upscale
        self.dirpath = dirpath
        self.key = key
        self.write_on_fit_end = on_fit_end
        self._dir: Path | None = None
        self._last_step: int | None = None

    # ---------------------------------------------------------------------------------------- hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # trainer.log_dir broadcasts under DDP: it must be called on every rank, so resolve it here.
        if self.dirpath is not None:
            self._dir = Path(self.dirpath)
        else:
            self._dir = Path(trainer.log_dir or trainer.default_root_dir) / "samples"

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.write(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.write(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.write_on_fit_end:
            self.write(trainer, pl_module)

    # ---------------------------------------------------------------------------------------- work
    def samples(self, pl_module: LightningModule) -> torch.Tensor:
        """The images of one grid: [n, 3, S, S] in [-1, 1]."""
        if hasattr(pl_module, "sample_fixed"):
            images = pl_module.sample_fixed()
            return images if self.num_samples is None else images[: self.num_samples]
        if hasattr(pl_module, "sample"):
            return pl_module.sample(self.num_samples or 64, seed=self.seed)
        raise ConfigError(f"SampleGrid needs a module with sample_fixed() or sample(n, seed); {type(pl_module).__name__} has neither")

    def write(self, trainer: Trainer, pl_module: LightningModule) -> Path | None:
        """Write (and log) the grid of the current step; returns its path on rank 0, else None.
        A second call at the same step does nothing."""
        if not trainer.is_global_zero or trainer.sanity_checking:
            return None
        step = int(trainer.global_step)
        if self._last_step == step:
            return None
        if self._dir is None:
            self._dir = Path(self.dirpath or os.path.join(trainer.default_root_dir, "samples"))
        with torch.no_grad():
            images = self.samples(pl_module).detach().float().cpu()
        grid = make_grid(images, nrow=self.nrow)
        if self.upscale > 1:
            grid = grid.repeat_interleave(self.upscale, dim=1).repeat_interleave(self.upscale, dim=2)
        path = save_image(grid, self._dir / f"step_{step:08d}.png")
        save_image(grid, self._dir / "latest.png")
        self._last_step = step
        self._log_image(trainer, grid, step)
        return path

    def _log_image(self, trainer: Trainer, grid: torch.Tensor, step: int) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            if trainer.loggers:
                log.debug("SampleGrid: no W&B logger (%s); the grid is only written to %s",
                          ", ".join(type(lg).__name__ for lg in trainer.loggers), self._dir)
            return
        array = to_uint8(grid).numpy()
        for lg in loggers:
            lg.log_image(key=self.key, images=[array], step=step, caption=[f"step {step}"])
