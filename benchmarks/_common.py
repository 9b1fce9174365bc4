"""Shared helpers of the benchmark scripts: command-line flags, hardware header, timing, tables.

Every script accepts ``--quick`` (smaller sizes, fewer repeats), ``--smoke`` (the smallest run that
still exercises every code path: seconds, for the test suite), ``--threads N`` and, where it makes
sense, ``--device``. Each prints a hardware header and then one markdown table; the last line of a
table row holds the rates. Rates are medians over repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(ROOT))


def parser(description: str, device: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    p.add_argument("--smoke", action="store_true", help="tiny run that only checks the code paths")
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (default 1: one core; 0 = torch's default). On a shared or loaded "
        "machine more threads than free cores make OpenMP spin and every rate collapse",
    )
    if device:
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return p


def setup_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def pick_device(name: str | None):
    import torch

    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def hardware_lines(device=None) -> list[str]:
    """Lines describing the machine: CPU model, cores, torch version, threads, GPU when present."""
    import torch

    lines = [
        f"CPU: {cpu_model()}, {os.cpu_count()} logical cores, load average {load_average()}",
        f"torch {torch.__version__}, python {platform.python_version()}, torch threads {torch.get_num_threads()}",
    ]
    if torch.cuda.is_available():
        idx = device.index if device is not None and getattr(device, "type", "") == "cuda" and device.index else 0
        lines.append(f"GPU: {torch.cuda.get_device_name(idx)} (CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s))")
    else:
        lines.append("GPU: none (CUDA not available)")
    return lines


def print_header(title: str, device=None, notes: Sequence[str] = ()) -> None:
    print(f"# {title}")
    for line in hardware_lines(device):
        print(line)
    for line in notes:
        print(line)
    print()


def sync(device) -> None:
    import torch

    if device is not None and getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device=None) -> float:
    """Seconds one call of ``fn`` takes (device synchronised before and after)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1, device=None) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        time_call(fn, device)
    return statistics.median(time_call(fn, device) for _ in range(max(1, repeats)))


def fetch_times(loader, limit: int | None = None) -> list[float]:
    """CPU seconds (this process) of each ``next()`` on one pass over ``loader``, at most ``limit`` of them."""
    times: list[float] = []
    it = iter(loader)
    while limit is None or len(times) < limit:
        t0 = time.process_time()
        try:
            next(it)
        except StopIteration:
            break
        times.append(time.process_time() - t0)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt(v: object, digits: int = 1) -> str:
    if isinstance(v, float):
        if v != v:  # nan
            return "n/a"
        if abs(v) >= 100 or digits == 0:
            return f"{v:.0f}"
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]], digits: int = 1) -> str:
    """A markdown table; floats are rounded (``digits`` decimals below 100)."""
    cells = [[fmt(v, digits) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        out.append("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |")
    return "\n".join(out)


def parse_markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The first markdown table in ``text``: (columns, rows of cell strings). Used by the smoke test."""
    lines = [ln.strip() for ln in text.splitlines()]
    for i, ln in enumerate(lines):
        if ln.startswith("|") and i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: "):
            cols = [c.strip() for c in ln.strip("|").split("|")]
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")])
            return cols, rows
    return [], []


def quiet_lightning() -> None:
    """Silence Lightning's info messages (GPU/TPU availability, tips, 'max_steps reached')."""
    import logging

    import lightning.pytorch  # noqa: F401  (creates its loggers)

    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("lightning", "lightning_fabric", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)
