"""``ConsoleProgress``: one progress bar per fit on a terminal, a plain line every N steps elsewhere.

Lightning's own bar redraws itself with carriage returns; written to a file (a log, a batch job's
output) it becomes thousands of fragments on one line. This callback draws a single ``tqdm`` bar when
the stream is a terminal and otherwise writes a complete line every ``every`` training batches::

    phase1: batch 128/1024 (12 %), epoch 2/16, 41 s

Use it with ``Trainer(enable_progress_bar=False)``. Only rank 0 writes.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, TextIO

from lightning.pytorch import Callback, LightningModule, Trainer


class ConsoleProgress(Callback):
    """Progress of the training batches of a fit.

    Args:
        label: prefix of the bar / lines (e.g. the phase).
        stream: where to write (default standard output at construction).
        tty: draw a bar (True) or write lines (False); default: whether ``stream`` is a terminal.
        every: batches between two lines when not a terminal; 0 = about 10 lines per fit.
    """

    def __init__(self, label: str = "training", stream: TextIO | None = None, tty: bool | None = None, every: int = 0) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"every must be an integer >= 0, got {every!r}")
        self.label = label
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else bool(tty)
        self.every = every
        self._bar = None
        self._total = 0
        self._t0 = 0.0
        self._start = 0
        self._step_every = 1

    def _done(self, trainer: Trainer) -> int:
        return int(trainer.fit_loop.epoch_loop.total_batch_idx) + 1

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        per_epoch = trainer.num_training_batches
        total = float("inf")
        if trainer.max_steps and trainer.max_steps > 0:
            total = trainer.max_steps
        if per_epoch != float("inf") and trainer.max_epochs and trainer.max_epochs > 0:
            total = min(total, per_epoch * trainer.max_epochs)
        self._total = int(total) if total != float("inf") else 0
        self._start = int(trainer.fit_loop.epoch_loop.total_batch_idx) + (1 if trainer.fit_loop.restarting else 0)
        self._start = max(0, min(self._start, self._total or self._start))
        self._t0 = time.time()
        self._step_every = self.every or max(1, math.ceil((self._total or 1000) / 10))
        if self.tty:
            from tqdm.auto import tqdm

            try:
                columns = os.get_terminal_size(self.stream.fileno()).columns
            except (AttributeError, OSError, ValueError):
                columns = 0
            size = {"dynamic_ncols": True} if columns > 0 else {"ncols": 80}  # a terminal of unknown width: 80
            self._bar = tqdm(total=self._total or None, initial=self._start, desc=self.label, file=self.stream,
                             unit="batch", leave=False, **size)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        done = self._done(trainer)
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()
            return
        if done % self._step_every == 0 or (self._total and done == self._total):
            total = f"/{self._total} ({100 * done / self._total:.0f} %)" if self._total else ""
            epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
            print(f"{self.label}: batch {done}{total}, epoch {trainer.current_epoch + 1}{epochs}, "
                  f"{time.time() - self._t0:.0f} s", file=self.stream, flush=True)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._close()


__all__ = ["ConsoleProgress"]
