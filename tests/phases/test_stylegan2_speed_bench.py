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


def test_synth_profile_builds_and_trains_on_joint_free_faces():
    """experiments/stylegan2_synth.yaml: its model and data arguments are accepted as they stand, and the
    data is MultiFeat-Synth (no bald AND bearded face among the training images)."""
    import speed_stylegan2
    import yaml

    from multifeat.data import AttributeDataModule
    from multifeat.phases.stylegan2ada import StyleGAN2ADA

    cfg = yaml.safe_load(speed_stylegan2.DEFAULT_CONFIG.read_text())
    module = StyleGAN2ADA(**cfg["model"]["init_args"])
    assert module.augment_pipe is None and module.hparams.r1_gamma == 0.01 and module.hparams.ema_kimg == 1.0
    assert module.G.num_ws == 8
    data_args = dict(cfg["data"]["init_args"], num_samples=256)
    dm = AttributeDataModule(**data_args)
    dm.setup("fit")
    attrs = next(iter(dm.train_dataloader()))["attrs"]
    names = list(dm.attribute_names)
    assert attrs.shape[0] == 32 and not bool((attrs[:, names.index("bald")] * attrs[:, names.index("beard")]).any())
    assert cfg["trainer"]["max_time"] == "00:01:00:00"
