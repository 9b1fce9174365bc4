"""``multifeat pipeline``: config handling (quick) and a tiny end-to-end run with resume (slow)."""

import json
import os
from pathlib import Path

import pytest
import yaml

from multifeat.commands import pipeline as P
from multifeat.errors import CheckpointError, ConfigError

TINY = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "tiny_pipeline.yaml").read_text())


def _write(tmp_path, cfg, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


# ---------------------------------------------------------------------------------------------- quick
def test_overrides_parse_yaml_values_and_create_sections(tmp_path):
    cfg = P.load_config(_write(tmp_path, TINY), ["phase1.trainer.max_epochs=5", "phase3.model.alpha=[1, 1, 0.2]",
                                                 "logger=none", "phase2.callbacks.checkpoint.every_n_epochs=2"])
    assert cfg["phase1"]["trainer"]["max_epochs"] == 5
    assert cfg["phase3"]["model"]["alpha"] == [1, 1, 0.2]
    assert cfg["logger"] == "none" and cfg["phase2"]["callbacks"]["checkpoint"] == {"every_n_epochs": 2}
    assert TINY["phase1"]["trainer"]["max_epochs"] == 2  # the file, not the dict, was read


@pytest.mark.parametrize("override, match", [
    ("bogus=1", "unknown top-level key"),
    ("phase1.optim.lr=1", "unknown key"),
    ("phase1.trainer=3", "must be a mapping"),
    ("logger=tensorboard", "logger must be"),
    ("phase3.callbacks.negative_bank.per_save=1", "unknown callback"),
    ("phase1", "KEY=VALUE"),
])
def test_bad_configs_are_config_errors(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        P.load_config(_write(tmp_path, TINY), [override])


def test_pipeline_owned_settings_cannot_be_set(tmp_path):
    layout = P.RunLayout(tmp_path / "run")
    cfg = P.load_config(_write(tmp_path, TINY), ["phase3.model.g1_ckpt=elsewhere.ckpt"])
    with pytest.raises(ConfigError, match="g1_ckpt is set by the pipeline"):
        P.build_phase(cfg, layout, "phase3")
    cfg = P.load_config(_write(tmp_path, TINY), ["phase1.trainer.default_root_dir=x"])
    with pytest.raises(ConfigError, match="default_root_dir is set by the pipeline"):
        P.build_phase(cfg, layout, "phase1")
    cfg = P.load_config(_write(tmp_path, TINY), ["phase2.callbacks.checkpoint.save_top_k=0"])
    with pytest.raises(ConfigError, match="saves no checkpoint before the end"):
        P.build_phase(cfg, layout, "phase2")
    cfg = P.load_config(_write(tmp_path, TINY), ["phase3.trainer.reload_dataloaders_every_n_epochs=0"])
    with pytest.raises(ConfigError, match="must be 1"):
        P.build_phase(cfg, layout, "phase3")


def test_phase3_without_earlier_phases_names_the_missing_checkpoint(tmp_path):
    layout = P.RunLayout(tmp_path / "run")
    cfg = P.load_config(_write(tmp_path, TINY))
    model, data, trainer_kw, callbacks = P.build_phase(cfg, layout, "phase3")
    assert trainer_kw["reload_dataloaders_every_n_epochs"] == 1
    assert model.hparams.g1_ckpt == str(layout.final("phase1"))
    with pytest.raises(CheckpointError, match=r"g1_ckpt '.*phase1/checkpoints/final.ckpt' does not exist: run phase 1 first"):
        model.configure_optimizers()


def test_eval_argv():
    assert P._eval_argv({"features": ["bald", "beard"], "n": 8, "evaluator_steps": 3, "x": None, "flag": True, "off": False}) == [
        "--features", "bald,beard", "--n", "8", "--evaluator-steps", "3", "--flag"]


def test_demo_config_is_valid(repo_root):
    cfg = P.load_config(repo_root / "experiments/method_a.yaml")
    assert cfg["phase1"]["model"]["image_size"] == cfg["phase3"]["data"]["image_size"] == 32
    snap, epochs = cfg["phase3"]["model"]["snapshot_epoch"], cfg["phase3"]["trainer"]["max_epochs"]
    assert 0 < snap < epochs
    celeba = P.load_config(repo_root / "experiments/celeba/method_a.yaml")
    assert celeba["phase3"]["data"]["source"] == "celeba"


# ---------------------------------------------------------------------------------------------- end to end
def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and p.parent.name not in ("version_0", "version_1")}


@pytest.mark.slow
def test_pipeline_end_to_end_resume_and_skip(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MULTIFEAT_CACHE", str(tmp_path / "cache"))
    cfg_path = _write(tmp_path, TINY)
    run = tmp_path / "run"
    assert P.main(["--config", cfg_path, "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    for rel in ("phase1/checkpoints/final.ckpt", "phase1/negatives/index.json", "phase1/samples/latest.png",
                "phase2/checkpoints/final.ckpt", "phase2/samples/d2_check.png", "phase3/checkpoints/final.ckpt",
                "phase3/samples/latest.png", "eval/report.md", "eval/metrics.json", "eval/grids/phase1.png",
                "eval/grids/phase3.png", "eval/baseline_phase1/metrics.json", "summary.md", "summary.json"):
        assert (run / rel).is_file(), rel
    for phase in ("phase1", "phase2", "phase3"):
        # a checkpoint per epoch (last.ckpt + the latest epoch), so a crash can resume
        assert len(list((run / phase / "checkpoints").glob("epoch=*.ckpt"))) == 1
        done = json.loads((run / phase / "done.json").read_text())
        assert done["final_checkpoint"] == str(run / phase / "checkpoints/final.ckpt")
        assert done["epochs"] == TINY[phase]["trainer"]["max_epochs"]
    assert json.loads((run / "phase3/done.json").read_text())["metrics"]["phase3/adain_active"] == 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert [p["status"] for p in summary["phases"]] == ["ran", "ran", "ran", "ran"]
    assert str(run / "eval/report.md") in out and str(run / "summary.md") in out
    # the phase-3 checkpoint knows where its G1/D2 came from
    from multifeat.io.checkpoints import load_checkpoint

    ck = load_checkpoint(run / "phase3/checkpoints/final.ckpt", expect_phase="phase3")
    assert ck["hyper_parameters"]["g1_ckpt"] == str(run / "phase1/checkpoints/final.ckpt")

    # a re-run skips every finished step and changes no file
    before = _mtimes(run)
    assert P.main(["--config", cfg_path, "--run-dir", str(run)]) == 0
    assert "phase1: finished earlier, skipped" in capsys.readouterr().out
    after = _mtimes(run)
    changed = [k for k in before if after.get(k) != before[k] and not k.startswith("summary")]
    assert changed == []

    # an unfinished phase 3 (no done.json) resumes from its last.ckpt with more epochs; 1-2 untouched
    os.remove(run / "phase3/done.json")
    os.remove(run / "eval/done.json")
    assert P.main(["--config", cfg_path, "--run-dir", str(run), "--set", "phase3.trainer.max_epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "phase3: resuming from" in out and "phase2: finished earlier, skipped" in out
    done3 = json.loads((run / "phase3/done.json").read_text())
    assert done3["resumed"] is True and done3["epochs"] == 3
    after2 = _mtimes(run)
    assert all(after2[k] == before[k] for k in before if k.startswith(("phase1/", "phase2/")))
