"""bench_small_data.py runs at its smallest size on a generated tree and prints its three tables."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
def test_bench_small_data_smoke(capsys, monkeypatch):
    import logging

    monkeypatch.syspath_prepend(str(BENCH))
    # the script quiets Lightning's loggers; give them their levels back afterwards
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("lightning", "lightning_fabric", "pytorch_lightning"):
            monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    import _common
    import bench_small_data

    assert bench_small_data.main(["--quick", "--smoke", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "CPU: " in out and "GPU: " in out and "synthetic faces written as JPEG" in out
    cols, rows = _common.parse_markdown_table(out)
    assert cols == ["variant", "batches/wall s", "wall ms/batch", "batches/CPU s"]
    assert [r[0] for r in rows] == ["short, cached", "long, cached", "short, not cached", "long, not cached",
                                    "synthetic (cache), long"]
    assert all(float(r[1]) > 0 for r in rows)
    tail = out[out.index("| comparison"):]
    _, comp = _common.parse_markdown_table(tail)
    assert [r[0].rsplit(" (", 1)[0] for r in comp] == ["short / long epochs, cached", "short / long epochs, not cached",
                                                   "real (cached) / synthetic (cached)"]
    assert all(float(r[1]) > 0 and r[2] in ("PASS", "FAIL") for r in comp)
    assert "data share" in out
    sys.modules.pop("bench_small_data", None)


def test_run_all_knows_the_benchmark():
    sys.path.insert(0, str(BENCH))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH))
    assert run_all.SCRIPTS["small_data"] == ("bench_small_data", [])
    assert run_all.arguments("small_data", "smoke", cuda=False) == ["--quick", "--smoke"]
    assert run_all.arguments("small_data", "quick", cuda=False) == ["--quick", "--size", "32", "--batch", "32"]
