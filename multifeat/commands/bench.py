"""``multifeat bench``: the MultiFeat-Synth benchmark (all methods, several seeds, one judge).

Usage::

    multifeat bench                                   # the default protocol (multifeat/bench/protocols/synth.yaml)
    multifeat bench --quick                           # fewer steps, smaller samples, 2 seeds (<= 5 min on 2 cores)
    multifeat bench --methods a,c,d --seeds 0,1,2 --out runs/bench
    multifeat bench --config experiments/celeba/bench.yaml --set data.root=/data
    multifeat bench --smoke --out /tmp/b              # every code path at toy size (machinery check)
    multifeat bench --threads 2 --out runs/bench_t2 --compare runs/bench   # does a second run agree?

A re-run skips the (method, seed) pairs whose records are in ``--out/runs``; ``--overwrite`` redoes
the selected ones. See ``docs/benchmark.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import yaml

from multifeat.bench.compare import load_results, write_agreement
from multifeat.bench.methods import METHODS, resolve_methods
from multifeat.bench.protocol import config_sources, load_config, protocol_hash
from multifeat.bench.report import main_table
from multifeat.bench.runner import run_benchmark
from multifeat.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    methods = "; ".join(f"{m.key} = {m.name}" for m in METHODS)
    p = argparse.ArgumentParser(
        prog="multifeat bench",
        description="The MultiFeat-Synth benchmark: train every method on data without jointly-featured images "
        "(bald AND beard), for several seeds, and measure how often each one generates both features at once.",
        epilog=f"methods: {methods}",
    )
    p.add_argument("--config", metavar="YAML", help="protocol file merged on the default, or a packaged protocol's name (default: multifeat/bench/protocols/synth.yaml)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller, faster protocol: fewer steps and samples, 2 seeds")
    size.add_argument("--smoke", action="store_true", help="toy size (16 px, a few steps): checks that everything runs")
    p.add_argument("--methods", metavar="LIST", help="comma-separated method keys or ids, e.g. a,c,d (default: the config's)")
    p.add_argument("--seeds", metavar="LIST", help="comma-separated training seeds, e.g. 0,1,2 (default: the config's)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/bench, runs/bench_quick with --quick, "
                   "runs/bench_smoke with --smoke)")
    p.add_argument("--overwrite", action="store_true", help="redo the selected (method, seed) runs even if their records exist")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a protocol value (dotted key, YAML value), e.g. gan.steps=500; repeatable")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cache-dir", metavar="DIR", help="where the evaluator is cached (default $MULTIFEAT_CACHE/evaluators "
                   "or ~/.cache/multifeat/evaluators)")
    p.add_argument("--compare", metavar="DIR", help="another run's output folder (same protocol and judge): write "
                   "agreement.md/.json comparing each method's means and 95 %% intervals with it")
    p.add_argument("--print_config", "--print-config", dest="print_config", action="store_true",
                   help="print the resolved protocol as YAML and exit")
    return p


def preset_notice(preset: str | None, cfg: dict) -> str | None:
    """The line printed under the table of a ``--quick`` or ``--smoke`` run: its GANs are far too short to
    draw faces, so its rates check the plumbing and are not results (None for a full protocol)."""
    if preset is None:
        return None
    return (f"--{preset}: the GANs trained {cfg['gan']['steps']} steps (StyleGAN2 {cfg['method_b']['stylegan']['steps']}); "
            "these rates check that every method runs end to end and are not results of the methods. "
            "Results come from the full protocol (no --quick/--smoke); see docs/benchmark.md.")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    preset = "quick" if args.quick else "smoke" if args.smoke else None
    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"threads={int(args.threads)}")
    if args.cache_dir:
        overrides.append(f"evaluator.cache_dir={args.cache_dir}")
    cfg = load_config(args.config, preset=preset, overrides=overrides)
    if args.print_config:
        print(f"# resolved from: {' + '.join(config_sources(args.config, preset))}"
              + (f" + --set {' '.join(overrides)}" if overrides else ""))
        print(f"# protocol hash: {protocol_hash(cfg)}")
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return 0
    other = None
    if args.compare:  # fail before hours of training, not after
        other = load_results(args.compare)
        if other["config_hash"] != protocol_hash(cfg):
            raise ConfigError(f"--compare {args.compare}: that run used another protocol (hash {other['config_hash']}, this "
                              f"one {protocol_hash(cfg)}); only runs of one protocol can be compared")
    out = args.out or {"quick": "runs/bench_quick", "smoke": "runs/bench_smoke"}.get(preset or "", "runs/bench")
    command = "multifeat bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results = run_benchmark(cfg, out, methods=args.methods, seeds=args.seeds, overwrite=args.overwrite, command=command.strip())

    specs = resolve_methods(results["config"]["methods"])
    rows = [(s.name, s.key, results["methods"][s.id]["summary"]) for s in specs]
    print()
    print(main_table(rows, results["features"]))
    print()
    notice = preset_notice(preset, results["config"])
    if notice:
        print(notice)
        print()
    run = results["run"]
    ev = results["evaluator"]
    print(f"Judge: attribute evaluator {ev.get('path')} (sha256 {ev.get('sha256_16') or 'unknown'})")
    print(f"FID/KID extractor: {results['extractor']}; evaluator accuracy: "
          + ", ".join(f"{a} {100 * v:.1f}%" for a, v in (results["evaluator"].get("val_accuracy") or {}).items()))
    print(f"wall {run['wall_seconds']} s, CPU {run['cpu_seconds']} s; load average {run['load_average_start']} -> "
          f"{run['load_average_end']}")
    f = results["files"]
    print(f"Report: {f['results_md']}  numbers: {f['results_json']}  chart: {f['chart']}  grids: {out}/grids/")
    if other is not None:
        cmp = write_agreement(out, results, args.compare)
        print(f"Agreement with {args.compare}: {cmp['rows_agreeing']} of {cmp['rows_checked']} rows agree "
              f"(each mean inside the other's 95 % interval): {cmp['files']['md']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from multifeat.cli import main as cli_main

    sys.exit(cli_main(["bench", *sys.argv[1:]]))
