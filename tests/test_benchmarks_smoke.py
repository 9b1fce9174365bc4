"""Every benchmark script runs at its smallest size and prints a table with the expected columns,
positive rates and a hardware header. (Speed itself is not asserted: the figures depend on the machine.)"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402


def run(module: str, capsys, *args: str) -> tuple[str, list[str], list[list[str]]]:
    mod = __import__(module)
    rc = mod.main(["--quick", "--smoke", *args])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "CPU: " in out and "torch " in out and "GPU: " in out and "threads" in out
    cols, rows = _common.parse_markdown_table(out)
    assert rows, out
    return out, cols, rows


def positive(cells: list[str]) -> None:
    for c in cells:
        v = float(c)
        assert math.isfinite(v) and v > 0, cells


def test_markdown_table_round_trip():
    text = "x\n" + _common.markdown_table(["a", "b"], [["r1", 1.5], ["r2", 250.0]]) + "\nafter"
    assert _common.parse_markdown_table(text) == (["a", "b"], [["r1", "1.5"], ["r2", "250"]])


def test_bench_phase1_flops(capsys):
    out, cols, rows = run("bench_phase1_flops", capsys)
    assert cols == ["variant", "GFLOP/step", "wall ms", "cpu ms", "img/s", "GFLOP/cpu-s", "fraction", "verdict", "compile s"]
    assert rows[0][0].startswith("reference") and any(r[0].startswith("recompute") for r in rows)
    positive([r[4] for r in rows] + [r[6] for r in rows])
    flops = {r[0]: float(r[1]) for r in rows}
    # recomputing G(z) for the G step adds one generator forward: strictly more counted FLOPs
    assert flops["recompute G(z) for the G step"] > flops[rows[0][0]]
    assert "matmul rate" in out


def test_bench_loading(capsys):
    _, cols, rows = run("bench_loading", capsys)
    assert cols == ["source", "files", "setup img/s", "load img/s"]
    assert {r[0].split()[1] for r in rows} == {"PNG", "JPG"}
    positive([r[2] for r in rows] + [r[3] for r in rows])


def test_bench_eval(capsys):
    out, cols, rows = run("bench_eval", capsys, "--device", "cpu")
    assert cols == ["what", "size", "images", "ms", "img/s"]
    assert any(r[0] == "evaluator predict_proba" for r in rows)
    assert any(r[0].startswith("projection") for r in rows) or "projection skipped" in out
    positive([r[4] for r in rows])


@pytest.mark.slow
def test_bench_phase1_overhead(capsys):
    _, cols, rows = run("bench_phase1_overhead", capsys)
    assert cols == ["variant", "wall ms", "cpu ms", "img/s", "wall vs plain", "cpu vs plain", "target", "verdict"]
    assert [r[0] for r in rows] == ["plain PyTorch loop", "lightning (bare)", "lightning (logger+bar)"]
    positive([r[3] for r in rows])
    assert rows[0][5] == "1.000"


@pytest.mark.slow
def test_bench_stylegan2(capsys):
    out, cols, rows = run("bench_stylegan2", capsys, "--device", "cpu")
    assert cols == ["res", "what", "batch", "ms", "img/s"]
    whats = {r[1] for r in rows}
    assert {"G fwd", "G fwd+bwd", "D fwd", "D fwd+bwd"} <= whats
    assert any(w.startswith("train step") for w in whats)
    positive([r[4] for r in rows])
    # second table: the alternatives agree with the package's operations
    ops_text = out.split("| op ", 1)[1]
    _, op_rows = _common.parse_markdown_table("| op " + ops_text)
    assert op_rows and all(float(r[5].split()[0]) < 1e-4 for r in op_rows)


@pytest.mark.slow
def test_gpu_check_on_cpu(capsys):
    out, cols, rows = run("gpu_check", capsys, "--device", "cpu")
    assert cols == ["what", "precision", "batch", "ms/step", "img/s", "note"]
    assert "FAILED" not in out, out
    whats = " ".join(r[0] for r in rows)
    for part in ("Phase 1 step, plain loop", "Phase1GAN via Trainer", "StyleGAN2 G fwd", "StyleGAN2ADA step"):
        assert part in whats
    assert {r[1] for r in rows} >= {"fp32", "bf16", "fp16", "32-true", "bf16-mixed"}
    positive([r[4] for r in rows])
    assert "DDP: skipped" in out


def test_speed_data_prints_a_rate_row_per_size(capsys):
    import speed_data

    rc = speed_data.main(["--sizes", "16", "--n", "32"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "CPU: " in out and "torch " in out
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["16"])
    # size, then "wall | cpu" for ds[i], DataLoader and cached
    rates = [row[i] for i in (1, 3, 4, 6, 7, 9)]
    positive(rates)


def test_run_all_names_existing_scripts():
    import run_all

    for name, (module, _) in run_all.SCRIPTS.items():
        assert (BENCH / f"{module}.py").is_file(), (name, module)
    # the speed scripts are not named like the benchmark package's modules
    assert not (BENCH / "bench_data.py").exists()
