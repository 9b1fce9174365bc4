"""Method A's orchestrator: the one way to build, run, resume and mark done a phase of Method A, and
the end-to-end run (phase 1 -> phase 2 -> phase 3 -> evaluation -> summary).

``multifeat pipeline`` (:mod:`multifeat.commands.pipeline`) parses its arguments and prints; the
benchmark (:mod:`multifeat.bench.methods`) trains methods b, c and d with the same functions.

- :mod:`~multifeat.pipeline.config`: the YAML config, ``--set`` overrides, validation, instantiation;
- :mod:`~multifeat.pipeline.layout`: the run folder (:class:`RunLayout`), :class:`PhaseResult`, hashes;
- :mod:`~multifeat.pipeline.phases`: :func:`build_phase`, :func:`run_phase` (resume, done marker, interrupts);
- :mod:`~multifeat.pipeline.checks`: the D2 check after phase 2 and its verdict grid;
- :mod:`~multifeat.pipeline.evaluation`: ``multifeat evaluate`` on G3 and G1, phase grids;
- :mod:`~multifeat.pipeline.summary`: ``summary.md`` / ``summary.json``, the judge, the false-positive probe;
- :mod:`~multifeat.pipeline.run`: :func:`run_pipeline`, signals, the quiet console.
"""

from multifeat.pipeline.config import load_config
from multifeat.pipeline.layout import PHASES, PhaseResult, RunLayout
from multifeat.pipeline.phases import Console, build_phase, run_phase
from multifeat.pipeline.run import PipelineInterrupted, run_pipeline

__all__ = ["PHASES", "Console", "PhaseResult", "PipelineInterrupted", "RunLayout", "build_phase", "load_config",
           "run_phase", "run_pipeline"]
