"""``InterruptCheckpoint``: SIGTERM / SIGINT during ``fit`` save a resumable checkpoint and exit non-zero.

Without it, a ``kill <pid>`` (SIGTERM, what SLURM and most schedulers send before a hard kill) makes
Lightning stop the loops and the process exit with status 0 and no message; everything trained since
the last epoch checkpoint is lost. With it:

1. the signal only sets a flag (the running training step finishes undisturbed);
2. at the end of that step (or, when the signal came during validation, at the end of the
   validation pass; or at the end of training) every rank saves the checkpoint
   ``<checkpoint folder>/last.ckpt`` together (under DDP only rank 0 writes the file), a
   mid-epoch checkpoint that the usual resume (``--ckpt_path``, the pipeline's ``last.ckpt``)
   continues exactly (:class:`~multifeat.callbacks.rng_state.RNGState` restores the data order);
3. rank 0 prints one line: what was interrupted, the step, the checkpoint and the command that resumes;
4. the process exits with ``128 + signal number``: 143 for SIGTERM, 130 for SIGINT.

A second SIGINT while the checkpoint is pending interrupts at once (``KeyboardInterrupt``).
Under DDP a signal received by any rank stops all of them (one all-reduce of a flag per step).

The ``multifeat fit`` command adds it to every Trainer; ``multifeat pipeline`` adds it to every phase.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

#: Exit statuses by signal (the shell's convention: 128 + signal number).
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


class RunInterrupted(SystemExit):
    """Raised (on every rank) after the interrupt checkpoint is saved; ``code`` is 143 or 130."""

    def __init__(self, signum: int, step: int, checkpoint: str | None) -> None:
        super().__init__(EXIT_CODES.get(signum, 128 + int(signum)))
        self.signum = int(signum)
        self.step = int(step)
        self.checkpoint = checkpoint


def default_resume_command(checkpoint: str) -> str:
    """The command line of this process with ``--ckpt_path <checkpoint>`` (replacing an earlier one)."""
    argv = list(sys.argv[1:])
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--ckpt_path", "--ckpt-path"):
            skip = True
            continue
        if a.startswith(("--ckpt_path=", "--ckpt-path=")):
            continue
        out.append(a)
    return shlex.join(["multifeat", *out, "--ckpt_path", checkpoint])


class InterruptCheckpoint(Callback):
    """Turn SIGTERM/SIGINT during ``fit`` into a checkpoint, one line and exit status 143/130.

    Args:
        dirpath: folder of the checkpoint (default: the ModelCheckpoint's folder, else
            ``<default_root_dir>/checkpoints``).
        filename: file name of the checkpoint (default ``last.ckpt``).
        label: what the line calls the interrupted run (default ``training``; the pipeline: the phase).
        resume_command: the command that resumes, or a function ``checkpoint path -> command``
            (default: this command line with ``--ckpt_path <checkpoint>``).
        say: where the line goes (default: standard error).
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "last.ckpt",
        label: str = "training",
        resume_command: str | Callable[[str], str] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.dirpath = dirpath
        self.filename = filename
        self.label = label
        self.resume_command = resume_command
        self.say = say
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------------------ signals
    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C: stop now, without a checkpoint
        self.signum = int(signum)

    def _install(self) -> None:
        if self._previous or threading.current_thread() is not threading.main_thread():
            return  # installed already; or not possible (signal handlers belong to the main thread)
        for s in EXIT_CODES:
            self._previous[s] = signal.getsignal(s)
            signal.signal(s, self._handler)

    def _restore(self) -> None:
        for s, h in self._previous.items():
            if signal.getsignal(s) == self._handler:  # Lightning may have restored its predecessors already
                signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._previous = {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.signum = None
        self._previous = {}

    # Lightning registers its own SIGTERM handler (which ends the fit with status 0) after on_fit_start,
    # just before the sanity check and the training start: replace it there.
    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install()
        signum = self._pending(trainer)
        if signum:  # the signal came during the sanity check
            self._stop(trainer, signum)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._restore()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore()  # the fit ends without the teardown hooks

    # ------------------------------------------------------------------------------ checks
    def _pending(self, trainer: Trainer) -> int | None:
        """The signal to act on now, agreed by every rank (any rank's signal stops them all)."""
        local = self.signum is not None
        if trainer.world_size > 1:
            import torch

            flag = torch.tensor([self.signum or 0], device=trainer.strategy.root_device)
            flag = trainer.strategy.reduce(flag, reduce_op="max")
            return int(flag.item()) or None
        return self.signum if local else None

    def checkpoint_path(self, trainer: Trainer) -> Path:
        folder = self.dirpath
        if folder is None:
            ck = trainer.checkpoint_callback
            folder = getattr(ck, "dirpath", None) or str(Path(trainer.default_root_dir) / "checkpoints")
        return Path(folder) / self.filename

    def _stop(self, trainer: Trainer, signum: int) -> None:
        path = self.checkpoint_path(trainer)
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(str(path))  # every rank takes part; only rank 0 writes
        if trainer.is_global_zero:
            if callable(self.resume_command):
                cmd = self.resume_command(str(path))
            else:
                cmd = self.resume_command or default_resume_command(str(path))
            name = signal.Signals(signum).name
            line = (f"{self.label} interrupted by {name} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
                    f"checkpoint {path}; resume with: {cmd}")
            (self.say or (lambda m: print(m, file=sys.stderr, flush=True)))(line)
        raise RunInterrupted(signum, trainer.global_step, str(path))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        signum = self._pending(trainer)
        if signum:
            self._stop(trainer, signum)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        signum = self._pending(trainer)
        if signum:
            self._stop(trainer, signum)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        signum = self._pending(trainer)
        if signum:
            self._stop(trainer, signum)


__all__ = ["EXIT_CODES", "InterruptCheckpoint", "RunInterrupted", "default_resume_command"]
