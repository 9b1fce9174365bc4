"""The run folder of Method A: where every phase writes, when a phase counts as finished, and what a
phase hands back (:class:`PhaseResult`).

Layout (``root`` is ``--run-dir``; ``folders`` may move a phase elsewhere, as the benchmark does
with phase 3 of each Method-A variant)::

    <phase>/checkpoints/{final,last}.ckpt   the phase's weights (final: written atomically at the end)
    <phase>/done.json                      the marker, written after final.ckpt
    <phase>/samples/                       sample grids
    phase1/negatives/                      the negative bank (phase 1 writes, phase 2 reads)
    eval/                                  the evaluation (eval/done.json keeps the evaluated hashes)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only

#: the phases of Method A, in order
PHASES = ("phase1", "phase2", "phase3")
#: what each phase produces (console lines)
PRODUCES = {"phase1": "G1/D1 and the negative bank", "phase2": "the feature classifier D2", "phase3": "G3 (with H)"}
FINAL = "final.ckpt"
DONE = "done.json"


@dataclass
class RunLayout:
    """Paths of one Method-A run. ``folders`` maps a phase to a folder outside ``root`` (default ``root/<phase>``)."""

    root: Path
    folders: dict[str, Path] = field(default_factory=dict)

    def phase(self, name: str) -> Path:
        return Path(self.folders[name]) if name in self.folders else self.root / name

    def checkpoints(self, name: str) -> Path:
        return self.phase(name) / "checkpoints"

    def final(self, name: str) -> Path:
        return self.checkpoints(name) / FINAL

    def last(self, name: str) -> Path:
        return self.checkpoints(name) / "last.ckpt"

    def done(self, name: str) -> Path:
        return self.phase(name) / DONE

    def samples(self, name: str) -> Path:
        return self.phase(name) / "samples"

    @property
    def negatives(self) -> Path:
        return self.phase("phase1") / "negatives"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def finished(self, name: str) -> bool:
        if name == "eval":
            return (self.eval / DONE).is_file()
        return self.final(name).is_file() and self.done(name).is_file()

    def read_done(self, name: str) -> dict[str, Any]:
        path = self.eval / DONE if name == "eval" else self.done(name)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}


@dataclass
class PhaseResult:
    """What running (or resuming, or skipping) one phase gave. ``module`` is the trained module when
    the phase ran in this process (None when skipped); it is not part of :meth:`to_dict`."""

    name: str
    status: str  # "ran", "resumed", "skipped"
    seconds: float = 0.0
    checkpoint: str | None = None
    samples: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    module: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "module"}


def config_hash(obj: Any) -> str:
    """16 hex digits of the SHA-256 of ``obj`` as sorted JSON (the settings a phase ran with)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]




def is_rank_zero() -> bool:
    """Whether this process writes the run folder: global rank 0, or the only process.

    Under DDP (``trainer.devices > 1`` or ``num_nodes > 1``) Lightning starts the other ranks by
    running the same command again; they run every phase's ``fit`` with rank 0 and write nothing.
    """
    return getattr(rank_zero_only, "rank", 0) == 0


__all__ = ["DONE", "FINAL", "PHASES", "PRODUCES", "PhaseResult", "RunLayout", "config_hash", "is_rank_zero"]
