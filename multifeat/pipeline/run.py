"""Method A end to end: phase 1 -> phase 2 -> phase 3 -> evaluation -> summary, in one run folder.

:func:`run_pipeline` is what ``multifeat pipeline`` runs. The console shows one line per phase
start and end and a progress bar; everything else (Lightning, W&B, warnings, the evaluation's
output) goes to ``<run folder>/pipeline.log`` (``verbose`` shows it on the console too).
SIGTERM/SIGINT outside a fit end the run with :class:`PipelineInterrupted` (inside a fit the
phase's InterruptCheckpoint saves a checkpoint first); the command turns it into exit 143/130.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist

from multifeat.loggers import QuietConsole
from multifeat.pipeline.evaluation import EvaluateMain, run_eval
from multifeat.pipeline.layout import PHASES, PhaseResult, RunLayout, is_rank_zero
from multifeat.pipeline.phases import Console, run_phase
from multifeat.pipeline.summary import write_summary
from multifeat.utils.files import ensure_writable_dir


class PipelineInterrupted(BaseException):
    """SIGTERM/SIGINT outside a training fit (between phases, during the evaluation)."""

    def __init__(self, signum: int, step: str = "setup") -> None:
        super().__init__(signum)
        self.signum = int(signum)
        self.step = step

    @property
    def exit_code(self) -> int:
        return 143 if self.signum == signal.SIGTERM else 130


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise PipelineInterrupted(signum)


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run (the same arguments)."""
    return shlex.join(["multifeat", "pipeline", *argv])


@dataclass
class PipelineRun:
    """What :func:`run_pipeline` did: the phase results, the summary files, the time, the log file.
    ``rank0`` is False in the other processes of a multi-device run (they write nothing)."""

    layout: RunLayout
    log_path: Path
    results: list[PhaseResult] = field(default_factory=list)
    summary_md: Path | None = None
    summary_json: Path | None = None
    total_seconds: float = 0.0
    rank0: bool = True


def run_pipeline(cfg: dict[str, Any], run_dir: str | os.PathLike, evaluate: EvaluateMain, *, stop_after: str | None = None,
                 verbose: bool = False, progress_every: int = 0, resume: str | None = None) -> PipelineRun:
    """Run (or resume) every step of ``cfg`` in ``run_dir``; ``stop_after`` a phase or ``eval``.

    ``evaluate`` is ``multifeat evaluate``'s ``main``; ``resume`` the command line printed to resume
    after an interrupt. Raises :class:`PipelineInterrupted` (its ``step`` says where) on SIGTERM/SIGINT.
    """
    layout = RunLayout(ensure_writable_dir(run_dir))
    rank0 = is_rank_zero()
    run = PipelineRun(layout, layout.root / "pipeline.log" if rank0 else Path(os.devnull), rank0=rank0)
    # handlers can only be set from the main thread
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in previous:
            signal.signal(s, _raise_interrupted)
    step = "setup"
    try:
        with QuietConsole(run.log_path, verbose=verbose) as qc:
            def line(msg: str) -> None:
                if rank0:
                    qc.line(f"[pipeline] {msg}")

            con = Console(line=line, detail=lambda m: qc.write_log(f"[pipeline] {m}"), stream=qc.stream,
                          verbose=verbose, progress_every=progress_every, resume_command=resume)
            qc.write_log(f"[pipeline] {time.strftime('%Y-%m-%d %H:%M:%S')} {resume or ''}".rstrip())
            t0 = time.time()
            for phase in PHASES:
                step = phase
                run.results.append(run_phase(cfg, layout, phase, con))
                if stop_after == phase:
                    break
            if dist.is_available() and dist.is_initialized():
                # the evaluation and the summary run in rank 0 alone, outside the training's process group
                dist.destroy_process_group()
            if not rank0:
                return run
            if stop_after in (None, "eval"):
                step = "eval"
                r = run_eval(cfg, layout, evaluate, con)
                if r is not None:
                    run.results.append(r)
            step = "summary"
            run.total_seconds = time.time() - t0
            run.summary_md, run.summary_json = write_summary(cfg, layout, run.results, run.total_seconds)
    except PipelineInterrupted as e:
        e.step = step
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
    return run


__all__ = ["PipelineInterrupted", "PipelineRun", "resume_command", "run_pipeline"]
