"""``multifeat pipeline``: Method A end to end — phase 1 -> phase 2 -> phase 3 -> evaluation — in one run folder.

Usage::

    multifeat pipeline --config experiments/method_a.yaml [--run-dir runs/demo]
                       [--set phase1.trainer.max_epochs=2 --set phase3.model.f=hinge ...] [--verbose]
                       [--stop-after PHASE] [--progress-every N] [--print_config]

This module parses the arguments and prints; the work is done by the orchestrator package
:mod:`multifeat.pipeline` (config, run folder, phases, D2 check, evaluation, summary; see
``docs/pipeline.md``). Run folder (``--run-dir``, default ``runs/<name>``)::

    phase1/{checkpoints,negatives,samples}   G1/D1, the negative bank, sample grids
    phase2/{checkpoints,samples}             D2, a grid of D2's verdicts per image source
    phase3/{checkpoints,samples}             G3/D3/D2/H, sample grids
    eval/{report.md,metrics.json,grids/}     feature rates, joint rate, FID/KID (multifeat evaluate)
    summary.md, summary.json                 what ran, where everything went, the key numbers, the judge
    pipeline.log                             what Lightning, W&B and the evaluation printed (``--verbose``: the console)

A re-run skips finished phases, resumes an unfinished one from ``checkpoints/last.ckpt`` and starts
the rest; SIGTERM/SIGINT save a checkpoint, print the command that resumes and exit with 143/130.

Config (YAML; see ``experiments/method_a.yaml``): ``name``, ``seed``, ``logger``, ``wandb``,
``joint_free``, ``data_root``, ``trainer``, ``phase1``-``phase3`` (``model``, ``data``, ``trainer``,
``callbacks``) and ``eval``. ``model`` / ``data`` are ``{class_path: ..., init_args: {...}}`` blocks
(or the bare keyword arguments of the phase's default class), parsed and type-checked by jsonargparse
when the config is loaded. ``--print_config`` prints the resolved config with every class default.

Overrides: ``--set KEY=VALUE`` (repeatable), ``KEY`` a dotted path into the config and ``VALUE``
parsed as YAML: ``--set phase1.trainer.max_epochs=2``, ``--set phase3.model.alpha=[1,1,0.2]`` (a key
under a ``class_path`` block goes to its ``init_args``), ``--set logger=csv``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import yaml

from multifeat.commands import evaluate as evaluate_cmd
from multifeat.errors import ConfigError
from multifeat.pipeline.config import SET_BY_PIPELINE, load_config, resolved_config
from multifeat.pipeline.evaluation import check_eval_evaluator
from multifeat.pipeline.layout import PHASES, RunLayout, is_rank_zero
from multifeat.pipeline.run import PipelineInterrupted, resume_command, run_pipeline
from multifeat.pipeline.summary import eval_table, false_positive_probe, judge, judge_line, probe_line

# the names other code reaches through this command module
__all__ = ["PHASES", "RunLayout", "build_parser", "load_config", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="multifeat pipeline",
        description="Method A end to end: phase 1 -> 2 -> 3 -> evaluation in one run folder; a re-run resumes "
        "at the first unfinished phase and never overwrites finished ones. The console shows one line per "
        "phase start and end, a progress bar and the result; everything else goes to <run folder>/pipeline.log.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="YAML", help="pipeline config, e.g. experiments/method_a.yaml")
    p.add_argument("--run-dir", metavar="DIR", help="run folder (default runs/<name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (dotted key, YAML value); repeatable")
    p.add_argument("--stop-after", choices=(*PHASES, "eval"), help="stop after this step")
    p.add_argument("--verbose", action="store_true",
                   help="show Lightning's and W&B's messages, warnings and progress bars on the console too")
    p.add_argument("--progress-every", type=int, default=0, metavar="N",
                   help="when the output is not a terminal: a progress line every N batches (0: about 10 per phase)")
    p.add_argument("--print_config", "--print-config", dest="print_config", action="store_true",
                   help="print the resolved config as YAML (every phase's model and data as class_path/init_args, "
                   "class defaults filled in) and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.progress_every < 0:
        raise ConfigError(f"--progress-every must be 0 or more, got {args.progress_every}")
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(f"# resolved from: {args.config}" + "".join(f" --set {o}" for o in args.overrides))
        print(f"# set by the pipeline when it runs (shown here as the class defaults): {', '.join(SET_BY_PIPELINE)}")
        print(yaml.safe_dump(resolved_config(cfg), sort_keys=False), end="")
        return 0
    check_eval_evaluator(cfg)
    root = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.get("name", "method_a")
    try:
        run = run_pipeline(cfg, root, evaluate_cmd.main, stop_after=args.stop_after, verbose=args.verbose,
                           progress_every=args.progress_every, resume=resume_command(argv))
    except PipelineInterrupted as e:
        if is_rank_zero():
            print(f"[pipeline] {e.step} interrupted by {signal.Signals(e.signum).name}; finished phases are kept; "
                  f"resume with: {resume_command(argv)}", file=sys.stderr, flush=True)
        return e.exit_code
    if not run.rank0:
        return 0

    out = sys.stdout
    print(file=out)
    print(f"Run folder: {run.layout.root}  ({run.total_seconds:.0f} s; full log: {run.log_path})", file=out)
    for r in run.results:
        where = r.samples or (", ".join((r.extra.get("grids") or {}).values()) if r.name == "eval" else None)
        print(f"  {r.name:<7} {r.status:<8} {r.seconds:7.1f} s  {r.checkpoint or r.extra.get('report') or ''}", file=out)
        if where:
            print(f"          grids: {where}", file=out)
    table = eval_table(run.results)
    if table:
        print(file=out)
        print(table, file=out)
    ev = next((r for r in run.results if r.name == "eval"), None)
    if ev is not None:
        print(judge_line(judge(ev.metrics)), file=out)
        probe = false_positive_probe(run.results, run.layout)
        if probe is not None:
            print(probe_line(probe), file=out)
    print(f"Summary: {run.summary_md} (+ {run.summary_json.name})", file=out, flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from multifeat.cli import main as cli_main

    sys.exit(cli_main(["pipeline", *sys.argv[1:]]))
