"""``multifeat forgetting``: Method A's forgetting curves (does G3 keep bald while it learns beard?).

Usage::

    multifeat forgetting --out runs/forgetting                 # experiments/bench_forgetting.yaml
    multifeat forgetting --quick --out runs/forgetting_quick   # one seed, the paper's f and beta2
    multifeat forgetting --threads 2 --out runs/forgetting_t2  # the same with two torch threads
    multifeat forgetting --evaluator judge.ckpt                # another judge (its hash is in every record)
    multifeat forgetting --out DIR --rejudge                   # re-rate DIR's stored samples with the judge
    multifeat forgetting --out DIR --report-only --compare DIR2  # does a second run agree? (agreement.md)
    multifeat forgetting --print-config

A re-run into the same ``--out`` skips the finished records and reuses the finished trunks and
phases 1-2. See ``docs/forgetting.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="multifeat forgetting",
        description="Rates of bald, beard and both in G3's samples every few batches through a long phase 3, for "
        "Method A without D2 terms (b0), with them (c0), with the data switch (c) and with AdaIN (d_h, d_g3).",
    )
    p.add_argument("--config", metavar="YAML", help="values merged on experiments/bench_forgetting.yaml")
    p.add_argument("--quick", action="store_true", help="the config's quick: section (one seed, the paper's f and beta2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value (dotted key, YAML value), e.g. phase3.epochs=40; repeatable")
    p.add_argument("--seeds", metavar="LIST", help="comma-separated seeds (default: the config's)")
    p.add_argument("--variants", metavar="LIST", help="comma-separated variants among b0,c0,c,d_h,d_g3")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads per process (default: torch's choice)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="training processes, each taking every N-th seed (default 1); the records do not depend on it")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers for its processes
    p.add_argument("--evaluator", metavar="PATH", help="the judge's checkpoint (default: the cached robust synthetic evaluator)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/forgetting, runs/forgetting_quick with --quick)")
    p.add_argument("--report-only", action="store_true", help="rewrite table, summary and figure from the records in --out")
    p.add_argument("--rejudge", action="store_true",
                   help="re-rate the stored samples (and G1) in --out with the judge (default or --evaluator), rewrite "
                   "records, table and figure; trains nothing")
    p.add_argument("--compare", metavar="DIR",
                   help="another run's --out folder: its means are drawn dashed in the figure and agreement.md says, per "
                   "row, whether each run's end-of-phase mean lies inside the other's 95 %% interval")
    p.add_argument("--label", nargs=2, metavar=("THIS", "OTHER"), default=("", ""),
                   help="names of --out's run and --compare's run in the figure and agreement.md")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from multifeat.bench.forgetting import (
        Experiment,
        config_hash,
        evaluation_noise,
        fill_d2_means,
        load_config,
        load_judge,
        planned_runs,
        read_records,
    )
    from multifeat.bench.forgetting_report import table, write_outputs
    from multifeat.bench.runner import hardware_info
    from multifeat.errors import ConfigError

    overrides = list(args.overrides)
    if args.seeds:
        overrides.append(f"seeds=[{args.seeds}]")
    if args.variants:
        overrides.append(f"variants=[{args.variants}]")
    if args.threads is not None:
        overrides.append(f"threads={int(args.threads)}")
    if args.evaluator:
        overrides.append(f"evaluator.path={args.evaluator}")
    cfg = load_config(args.config, quick=args.quick, overrides=overrides)
    if args.print_config:
        import yaml

        print(f"# config hash: {config_hash(cfg)}")
        print(yaml.safe_dump({k: v for k, v in cfg.items() if k != "quick"}, sort_keys=False), end="")
        return 0
    out = args.out or ("runs/forgetting_quick" if args.quick else "runs/forgetting")
    features = list(cfg["features"])
    if args.rejudge:
        from multifeat.bench.forgetting_rejudge import rejudge

        judge = load_judge(cfg)
        rejudge(out, judge, evaluation_noise(cfg))
        args.report_only = True
    if args.report_only:
        records = list(read_records(out))
        n = fill_d2_means(out, records)
        if n:
            print(f"[forgetting] D2's mean on {n} stored sample sets computed now (records of an earlier version)")
        second = _compare_records(args.compare)
        files = write_outputs(out, records, features, second=second, labels=tuple(args.label))
        print(table(records, features))
        if second:
            print(Path(files["agreement"]).read_text())
        print("  ".join(f"{k}: {v}" for k, v in files.items() if k != "records"))
        return 0
    import torch

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    t0 = time.perf_counter()
    if args.worker_index is not None:  # one of the --workers processes: every N-th seed, no outputs
        cfg["seeds"] = cfg["seeds"][args.worker_index :: args.workers]
        if cfg["seeds"]:
            Experiment(cfg, out, load_judge(cfg)).run(planned_runs(cfg))
        return 0
    judge = load_judge(cfg)  # trains and caches the default judge once, before any worker starts
    print(f"[forgetting] judge {judge.path} (sha256 {judge.sha256[:16]}); out {out}; torch threads "
          f"{torch.get_num_threads()}; {args.workers} process(es)", flush=True)
    exp = Experiment(cfg, out, judge)
    runs = planned_runs(cfg)
    if args.workers > 1:
        _run_workers(argv if argv is not None else sys.argv[1:], args.workers, judge.path)
    records = exp.run(runs)  # with workers: every record is there and is only read
    command = "multifeat forgetting " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    extra = {"command": command.strip(), "config_hash": exp.hash, "config": {k: v for k, v in cfg.items() if k != "quick"},
             "evaluator": judge.info(), "wall_seconds_this_call": round(time.perf_counter() - t0, 1),
             "torch_threads": torch.get_num_threads(), "workers": args.workers, "hardware": hardware_info()}
    second = _compare_records(args.compare)
    files = write_outputs(out, records, features, extra, second=second, labels=tuple(args.label))
    print()
    print(table(records, features))
    if second:
        print(Path(files["agreement"]).read_text())
    print(f"records: {files['records']}  table: {files['table']}  figure: {files['figure']}  "
          f"({time.perf_counter() - t0:.0f} s this call)")
    return 0


def _compare_records(folder: str | None) -> list[dict] | None:
    """The records of ``--compare``'s folder (None without the option); an empty or missing folder is an error."""
    if not folder:
        return None
    from multifeat.bench.forgetting import read_records
    from multifeat.errors import ConfigError

    recs = list(read_records(folder))
    if not recs:
        raise ConfigError(f"--compare '{folder}' holds no records (expected {Path(folder) / 'records'}/*.json)")
    return recs


def _run_workers(argv: list[str], n: int, judge_path: str) -> None:
    """Run ``n`` copies of this command, copy ``i`` training every ``n``-th seed from the ``i``-th; wait for all.
    A failing copy stops the others and is reported with its exit status."""
    import subprocess

    base = [sys.executable, "-m", "multifeat.cli", "forgetting", *argv, "--evaluator", str(judge_path)]
    procs = [subprocess.Popen([*base, "--worker-index", str(i)]) for i in range(n)]
    try:
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
    bad = [(i, c) for i, c in enumerate(codes) if c]
    if bad:
        raise SystemExit(f"multifeat forgetting: worker process(es) {bad} (index, exit status) failed; re-run to resume")


if __name__ == "__main__":  # pragma: no cover
    from multifeat.cli import main as cli_main

    sys.exit(cli_main(["forgetting", *sys.argv[1:]]))
