"""benchmarks/speed_stylegan2.py at its smallest size: it reads the profile, classifies each step by the
regulariser that ran, and prints one row per variant (speed itself is not asserted)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))


@pytest.mark.slow
def test_speed_stylegan2_smoke(capsys):
    import _common
    import speed_stylegan2

    assert speed_stylegan2.main(["--smoke", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "torch threads: 1" in out and "stylegan2_synth.yaml" in out and "CPU: " in out
    cols, rows = _common.parse_markdown_table(out)
    assert cols == ["variant", "batch", "main only ms", "R1 step ms", "path-length step ms", "mean per step ms", "img/cpu-s"]
    by = {r[0]: r for r in rows}
    assert set(by) == {"profile", "profile + augment bgc (p = 0.2 fixed)", "profile + path length (weight 2, every 4)"}
    # the profile has no path-length term: no such step; the variant with it has one every 4th step
    assert by["profile"][4] == "n/a" and math.isfinite(float(by["profile + path length (weight 2, every 4)"][4]))
    for r in rows:
        assert all(float(v) > 0 for v in (r[2], r[3], r[5], r[6]))


def test_profile_reads_the_config_and_refuses_others(tmp_path):
    import speed_stylegan2

    from multifeat.errors import ConfigError

    model, batch = speed_stylegan2.profile(speed_stylegan2.DEFAULT_CONFIG, smoke=False)
    assert batch == 32 and model["image_size"] == 32 and model["pl_weight"] == 0 and model["augment"] is None
    bad = tmp_path / "phase1.yaml"
    bad.write_text("model:\n  class_path: multifeat.phases.Phase1GAN\n  init_args: {}\ndata:\n  init_args: {batch_size: 8}\n")
    with pytest.raises(ConfigError, match="StyleGAN2ADA"):
        speed_stylegan2.profile(bad, smoke=False)
