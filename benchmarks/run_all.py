"""Run every benchmark in its quick form, one after the other (``make bench``).

    python benchmarks/run_all.py               # --quick versions, about 10 minutes on 2 loaded cores
    python benchmarks/run_all.py --full        # the full versions
    python benchmarks/run_all.py --smoke       # every script at its smallest size
    python benchmarks/run_all.py --only stylegan2 eval

The GPU check runs only when CUDA is available (or with ``--only gpu_check``, then on the CPU).
Each script prints its own hardware header and table; a failing script is reported and the others
still run; the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

# name -> (module, extra quick arguments)
SCRIPTS = {
    "phase1_overhead": ("bench_phase1_overhead", []),
    "phase1_flops": ("bench_phase1_flops", []),
    "stylegan2": ("bench_stylegan2", []),
    "stylegan2_speed": ("speed_stylegan2", []),
    "data": ("speed_data", None),
    "loading": ("bench_loading", []),
    "small_data": ("bench_small_data", []),
    "eval": ("bench_eval", []),
    "gpu_check": ("gpu_check", []),
}


def arguments(name: str, mode: str, cuda: bool) -> list[str]:
    if name == "data":  # the data benchmark has its own flags
        return {"smoke": ["--sizes", "32", "--n", "64"], "quick": ["--sizes", "32", "64", "--n", "512"]}.get(mode, [])
    args = {"smoke": ["--quick", "--smoke"], "quick": ["--quick"], "full": []}[mode]
    if name == "small_data" and mode == "quick":  # 32 px keeps it near 1 minute on 2 loaded cores
        args = args + ["--size", "32", "--batch", "32"]
    if name == "gpu_check" and not cuda:
        args = args + ["--device", "cpu"]
    return args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_true", help="full versions instead of --quick")
    g.add_argument("--smoke", action="store_true", help="smallest versions (checks that every script runs)")
    p.add_argument("--only", nargs="+", choices=sorted(SCRIPTS), help="run only these")
    args = p.parse_args(argv)
    mode = "full" if args.full else ("smoke" if args.smoke else "quick")
    sys.path.insert(0, str(HERE))
    import torch

    cuda = torch.cuda.is_available()
    names = args.only or [n for n in SCRIPTS if n != "gpu_check" or cuda]
    failed = []
    for name in names:
        module, _ = SCRIPTS[name]
        a = arguments(name, mode, cuda)
        print(f"\n===== {module}.py {' '.join(a)}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = importlib.import_module(module).main(a)
        except Exception:  # noqa: BLE001 - report and go on with the others
            traceback.print_exc()
            rc = 1
        print(f"----- {module}: {'ok' if not rc else 'exit ' + str(rc)} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(module)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
