"""The MultiFeat-Synth benchmark: every method trained on data without jointly-featured images, for
several seeds, judged by one attribute evaluator.

- :mod:`multifeat.bench.protocol`  the protocol: packaged YAML (``protocols/``), presets, validation, hash
- :mod:`multifeat.bench.methods`   the methods ``a``-``g`` and how each one is trained
- :mod:`multifeat.bench.training`  what a method gets and returns; quiet seeded training, checkpoints
- :mod:`multifeat.bench.runner`    :func:`run_benchmark`: resume, train, sample and evaluate every run
- :mod:`multifeat.bench.report`    statistics, tables, chart, grids, ``results.json`` / ``results.md``

The no-joint-images guard it relies on is :mod:`multifeat.data.guard`. See ``docs/benchmark.md``.
"""

from multifeat.bench.methods import METHODS, MethodSpec, resolve_methods
from multifeat.bench.protocol import load_config, protocol_hash
from multifeat.bench.runner import run_benchmark

__all__ = ["METHODS", "MethodSpec", "load_config", "protocol_hash", "resolve_methods", "run_benchmark"]
