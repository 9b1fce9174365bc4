"""Keep G1's unclear early samples as the negative bank that Phase 2 reads.

Early in Phase 1 the generator's images are noise-like or look low-resolution; they do not carry
feature 1 in any useful sense. The paper keeps them and trains D2 to reject them, so that D2 later
refuses blurry or noisy fakes from G3.

At the **start** of every training batch whose ``global_step`` is a multiple of ``every_n_steps``
(step 0 included: the untrained G1), while ``global_step < first_steps`` and/or
``current_epoch < first_epochs`` (each when set), the callback samples ``per_save`` images from the
live G1 (never the EMA copy) and adds them to the bank folder with :class:`multifeat.io.bank.BankWriter`
as the entries of (epoch, step), until the bank holds ``max_images``.

Determinism and resume: the noise of a save is drawn from a ``torch.Generator`` seeded by
``(seed, step)``, and G1 is run in eval mode (BatchNorm uses its running statistics and leaves them
unchanged; the global RNG is not touched; the training mode is restored). Replaying a step after a
resume therefore produces the same images, and the writer ignores an (epoch, step) it already
holds: a resumed run neither loses nor duplicates entries. A *fresh* run refuses a bank folder that
already has entries (they came from another run) unless ``overwrite=True``, which empties it first.

Only global rank 0 samples and writes. Default folder: ``<trainer.default_root_dir>/negatives``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from multifeat.errors import ConfigError
from multifeat.io.bank import INDEX_NAME, BankWriter

log = logging.getLogger(__name__)

# Large odd multiplier so that (seed, step) pairs map to distinct generator seeds.
_SEED_STRIDE = 1_000_003


class NegativeBank(Callback):
    """Save G1's early samples to a negative-bank folder.

    Args:
        bank_dir: the bank folder; None uses ``<trainer.default_root_dir>/negatives``.
        first_epochs: collect only while ``current_epoch < first_epochs``; None: no epoch limit.
        first_steps: collect only while ``global_step < first_steps``; None: no step limit.
            Default 500. (When both limits are None the bank fills until ``max_images``.)
        every_n_steps: collect at steps that are multiples of this. Default 25.
        per_save: images per collection. Default 16.
        max_images: stop once the bank holds this many images. Default 512.
        seed: seed of the sampling noise (combined with the step). Default 0.
        overwrite: a fresh (not resumed) run empties a non-empty bank folder instead of refusing
            it. Default False.
    """

    def __init__(
        self,
        bank_dir: str | None = None,
        first_epochs: int | None = None,
        first_steps: int | None = 500,
        every_n_steps: int = 25,
        per_save: int = 16,
        max_images: int = 512,
        seed: int = 0,
        overwrite: bool = False,
    ) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ConfigError(f"NegativeBank.every_n_steps must be >= 1, got {every_n_steps}")
        if per_save < 1:
            raise ConfigError(f"NegativeBank.per_save must be >= 1, got {per_save}")
        if max_images < 1:
            raise ConfigError(f"NegativeBank.max_images must be >= 1, got {max_images}")
        for name, v in (("first_epochs", first_epochs), ("first_steps", first_steps)):
            if v is not None and v < 1:
                raise ConfigError(f"NegativeBank.{name} must be >= 1 or null, got {v}")
        self.bank_dir = bank_dir
        self.first_epochs = first_epochs
        self.first_steps = first_steps
        self.every_n_steps = every_n_steps
        self.per_save = per_save
        self.max_images = max_images
        self.seed = seed
        self.overwrite = overwrite
        self.writer: BankWriter | None = None
        self._restored = False

    # ---------------------------------------------------------------------------------------- setup
    def resolve_dir(self, trainer: Trainer) -> Path:
        return Path(self.bank_dir) if self.bank_dir is not None else Path(trainer.default_root_dir) / "negatives"

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Called after a checkpoint (if any) is restored, so a resume is recognisable here.
        if not trainer.is_global_zero:
            return
        root = self.resolve_dir(trainer)
        writer = BankWriter(root)
        resuming = self._restored or trainer.global_step > 0
        if len(writer) and not resuming:
            if not self.overwrite:
                raise ConfigError(
                    f"negative bank folder '{root}' already holds {len(writer)} images from an earlier run; "
                    f"resume that run (--ckpt_path), choose another bank_dir, delete the folder, or set "
                    f"NegativeBank overwrite: true"
                )
            self._empty(root, writer)
            writer = BankWriter(root)
        self.writer = writer

    def state_dict(self) -> dict:
        # The bank itself lives on disk (its index); the checkpoint only marks that one was being built.
        return {"bank_dir": None if self.writer is None else str(self.writer.root)}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = True

    @staticmethod
    def _empty(root: Path, writer: BankWriter) -> None:
        """Remove the index first (an interrupted clear leaves an empty bank, not a wrong one)."""
        files = [e["file"] for e in writer.entries]
        (root / INDEX_NAME).unlink(missing_ok=True)
        for name in files:
            (root / name).unlink(missing_ok=True)

    # ---------------------------------------------------------------------------------------- collect
    def wants(self, epoch: int, step: int) -> bool:
        """Whether (epoch, step) is a collection point (ignores the bank's fill level)."""
        if step % self.every_n_steps:
            return False
        if self.first_steps is not None and step >= self.first_steps:
            return False
        if self.first_epochs is not None and epoch >= self.first_epochs:
            return False
        return True

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        if not trainer.is_global_zero or self.writer is None:
            return
        epoch, step = int(trainer.current_epoch), int(trainer.global_step)
        if not self.wants(epoch, step) or self.writer.has(epoch, step):
            return
        n = min(self.per_save, self.max_images - len(self.writer))
        if n <= 0:
            return
        images = self.draw(pl_module, n, step)
        self.writer.add(images, epoch, step)

    def draw(self, pl_module: LightningModule, n: int, step: int) -> torch.Tensor:
        """``n`` images [n, 3, S, S] from the live generator for ``step`` (same step, same noise)."""
        seed = self.seed * _SEED_STRIDE + step
        if hasattr(pl_module, "generate") and hasattr(pl_module, "noise"):
            return pl_module.generate(pl_module.noise(n, seed=seed), ema=False)
        # Any module with a plain ``generator`` network that has ``z_dim``.
        g = getattr(pl_module, "generator", None)
        if g is None or not hasattr(g, "z_dim"):
            raise ConfigError(f"NegativeBank needs a generator module (like Phase1GAN); {type(pl_module).__name__} has none")
        z = torch.randn(n, g.z_dim, generator=torch.Generator().manual_seed(seed)).to(pl_module.device)
        was_training = g.training
        g.eval()
        try:
            with torch.no_grad():
                return g(z)
        finally:
            g.train(was_training)
