"""``RNGState``: checkpoints carry the random states, so a resumed fit is bit-identical.

Lightning saves weights, optimizer states and loop counters, but not the random number generators:
a resumed GAN would draw other noise, other augmentations and another data order than the run it
continues. This callback stores (see :mod:`multifeat.utils.rng`) the torch CPU/CUDA, numpy and
python states, and the ``torch.Generator`` of every training DataLoader/sampler, and restores them.

Every :class:`~multifeat.phases.base.PhaseModule` attaches it by itself (``configure_callbacks``);
list it under ``trainer.callbacks`` only for other LightningModules.

Guarantee (single process, deterministic kernels, e.g. on CPU): the final weights of a run killed
at any point and resumed from its last checkpoint equal those of an uninterrupted run, for a
checkpoint taken at an epoch boundary or in the middle of an epoch. Mid-epoch, the epoch's iterator
is rebuilt from the states recorded at the epoch's start and the batches already trained on are
loaded again and dropped (one pass of data loading, no training). Hooks that draw from the global
RNG between two batches are covered, as long as they draw the same amount on every run.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from multifeat.utils import rng as _rng


def _train_loaders(trainer: Trainer) -> list:
    combined = getattr(trainer.fit_loop, "_combined_loader", None)
    return list(combined.flattened) if combined is not None else []


def _restart_data(trainer: Trainer, skip: int) -> None:
    """Re-create the training iterator (from the current states) and drop ``skip`` batches."""
    fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
    if fetcher is None:
        return
    iter(fetcher)
    if skip:
        # samplers with set_epoch (DistributedSampler) must know the epoch before the first draw
        epoch = trainer.fit_loop.epoch_progress.current.processed
        for dl in _train_loaders(trainer):
            for s in (getattr(dl, "sampler", None), getattr(getattr(dl, "batch_sampler", None), "sampler", None)):
                if callable(getattr(s, "set_epoch", None)):
                    s.set_epoch(epoch)
    for _ in range(skip):
        next(fetcher)
    fetcher.fetched = 0  # on a restart the epoch loop adds the batches already done
    fetcher.done = False


class RNGState(Callback):
    """Save the random states in checkpoints and restore them on resume (no arguments)."""

    def __init__(self) -> None:
        self._trainer: Trainer | None = None
        self._epoch_start: dict[str, Any] | None = None
        self._resume: dict[str, Any] | None = None
        self._iterator_ready = False  # the current epoch's iterator was built in on_train_start

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    # -------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The states now (at the save) and at the start of the current epoch."""
        trainer = self._trainer
        loaders = _train_loaders(trainer) if trainer is not None else []
        progress = trainer.fit_loop.epoch_loop.batch_progress if trainer is not None else None
        return {
            "version": 1,
            "now": _rng.capture(loaders),
            "epoch_start": self._epoch_start,
            "epoch": int(trainer.current_epoch) if trainer is not None else -1,
            # the epoch's iterator is finished when the saved batch was its last one
            "epoch_finished": bool(progress.is_last_batch) if progress is not None else True,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or state_dict.get("now") is None:
            return
        # Restore at once (what runs before training starts then draws as an uninterrupted run
        # would after the save) and again at train start, when the data loaders exist.
        _rng.restore_global(state_dict["now"])
        self._resume = state_dict

    # -------------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loaders = _train_loaders(trainer)
        resume, self._resume = self._resume, None
        if not loaders:
            return
        self._iterator_ready = True
        fit_loop = trainer.fit_loop
        done = int(fit_loop.epoch_loop.batch_progress.current.ready) if resume is not None else 0
        if resume is None:
            # fresh fit: record the states the first epoch's iterator starts from, then build it
            self._epoch_start = _rng.capture(loaders)
            _restart_data(trainer, 0)
        elif (done > 0 and not resume.get("epoch_finished", True) and resume.get("epoch_start") is not None
              and int(resume.get("epoch", -1)) == trainer.current_epoch):
            # mid-epoch: the epoch's order again, minus the batches already trained on
            self._epoch_start = resume["epoch_start"]
            _rng.restore(resume["epoch_start"], loaders)
            _restart_data(trainer, done)
            _rng.restore(resume["now"], loaders, loaders_too=False)
        else:
            # epoch boundary: continue from the saved states
            _rng.restore(resume["now"], loaders)
            self._epoch_start = _rng.capture(loaders)
            _restart_data(trainer, 0)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Later epochs: this runs just before the epoch's iterator is created.
        if self._iterator_ready:
            self._iterator_ready = False
            return
        self._epoch_start = _rng.capture(_train_loaders(trainer))
