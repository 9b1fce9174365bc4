"""Speed of SyntheticFaces rendering on one CPU core (not a test).

    python benchmarks/speed_data.py                   # sizes 32 64 128, 2048 images each
    python benchmarks/speed_data.py --sizes 64 --n 4096

Paths measured per size: ``ds[i]`` one at a time; ``DataLoader`` batches of 64 (vectorised
``__getitems__``, num_workers=0); a second epoch over a ``cache=True`` dataset. Each is reported
as images per wall-clock second and per CPU-second of this process (``time.process_time``); on a
machine shared with other jobs (see the load average printed) the CPU-second figure is the one
that measures one core. The target is >= 1,000 images per CPU-second at 64 px for the DataLoader path.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

try:  # the shared hardware helpers, whether run as a script or imported as benchmarks.speed_data
    from benchmarks._common import cpu_model
except ImportError:
    from _common import cpu_model


def rate(fn, n: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of ``fn`` producing ``n`` images."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--n", type=int, default=2048, help="images per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads (default 1: one core)")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from multifeat.data import SyntheticFaces

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores on the machine)")
    print(f"torch {torch.__version__}, numpy {np.__version__}, python {platform.python_version()}, threads {torch.get_num_threads()}")
    try:
        print(f"load average (1 min): {os.getloadavg()[0]:.1f}")
    except OSError:
        pass
    print()
    print("images/s: wall-clock | per CPU-second")
    print(f"{'size':>5} {'ds[i]':>15} {'DataLoader':>15} {'cached':>15}  {'target (64 px)':>14}")
    ok = True
    for size in args.sizes:
        n = args.n
        ds = SyntheticFaces(num_samples=n, image_size=size, seed=0)
        ds[0]  # warm up
        single = rate(lambda ds=ds, n=n: [ds[i] for i in range(n)], n)
        loader = DataLoader(ds, batch_size=64, num_workers=0)
        batched = rate(lambda loader=loader: list(loader), n)
        cached = SyntheticFaces(num_samples=n, image_size=size, seed=0, cache=True)
        cl = DataLoader(cached, batch_size=64, num_workers=0)
        list(cl)  # the first epoch fills the cache
        hit = rate(lambda cl=cl: list(cl), n)
        verdict = ""
        if size == 64:
            verdict = "PASS" if batched[1] >= 1000 else "FAIL"
            ok &= batched[1] >= 1000

        def cell(r):
            return f"{r[0]:.0f} | {r[1]:.0f}"

        print(f"{size:>5} {cell(single):>15} {cell(batched):>15} {cell(hit):>15}  {verdict:>14}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
