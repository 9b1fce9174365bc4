"""The 2-core CelebA profile (experiments/celeba_cpu): the pipeline's top-level ``data_root``, the
joint-free filters, and tiny runs of its pipeline and bench configs on a generated CelebA-like tree."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from multifeat.commands import pipeline as P
from multifeat.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "experiments" / "celeba_cpu"
sys.path.insert(0, str(REPO / "tests" / "data"))
from celeba_fixtures import make_celeba  # noqa: E402


def _write(tmp_path, cfg, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


# ---------------------------------------------------------------------------------------------- data_root
def test_data_root_fills_every_phase_unless_it_sets_its_own(tmp_path):
    cfg = {
        "data_root": "/faces",
        "phase1": {"data": {"source": "celeba"}},
        "phase2": {"data": {"source": "celeba", "root": "/elsewhere"}},
        "phase3": {"data": {"class_path": "multifeat.data.switching.SwitchingDataModule", "init_args": {"source": "celeba"}}},
    }
    out = P.load_config(_write(tmp_path, cfg))
    assert out["phase1"]["data"]["root"] == "/faces"
    assert out["phase2"]["data"]["root"] == "/elsewhere"
    assert out["phase3"]["data"]["init_args"]["root"] == "/faces"
    # an override on the command line replaces the file's value
    again = P.load_config(_write(tmp_path, cfg), ["data_root=/other"])
    assert again["phase1"]["data"]["root"] == "/other" and again["phase2"]["data"]["root"] == "/elsewhere"
    # without the key nothing is added
    plain = P.load_config(_write(tmp_path, {"phase1": {"data": {"source": "celeba"}}}))
    assert "root" not in plain["phase1"]["data"]


@pytest.mark.parametrize("value", [5, "", ["a"]])
def test_bad_data_root_is_a_config_error(tmp_path, value):
    with pytest.raises(ConfigError, match="data_root"):
        P.load_config(_write(tmp_path, {"data_root": value}))


def test_profile_pipeline_is_joint_free_with_one_data_root():
    raw = yaml.safe_load((PROFILE / "method_a.yaml").read_text())
    assert raw["joint_free"] == ["bald", "beard"] and "data_root" in raw
    assert all("root" not in raw[p]["data"]["init_args"] for p in P.PHASES)  # the one key
    cfg = P.load_config(PROFILE / "method_a.yaml", ["data_root=/faces"])
    data = {p: cfg[p]["data"]["init_args"] for p in P.PHASES}
    assert [data[p]["root"] for p in P.PHASES] == ["/faces"] * 3
    assert data["phase1"]["require"] == {"bald": True, "beard": False}
    assert data["phase2"]["require"] == {"beard": False}
    assert data["phase3"]["before"] == {"beard": True, "bald": False}
    assert data["phase3"]["after"] == {"bald": True, "beard": False}
    m1, m3 = cfg["phase1"]["model"]["init_args"], cfg["phase3"]["model"]["init_args"]
    assert m1["augment"] == m3["augment"] == "bgc" and m1["norm_d"] == m3["norm_d"] == "none"
    assert m1["ema_rampup"] > 0


def test_profile_bench_config_loads_with_its_data_root():
    from multifeat.bench import protocol as B

    cfg = B.load_config(PROFILE / "bench.yaml", overrides=["data.root=/faces"])
    assert cfg["data"]["root"] == "/faces" and cfg["data"]["source"] == "celeba"
    assert cfg["gan"]["norm_d"] == "none" and cfg["gan"]["augment"] == "bgc" and cfg["gan"]["ema_rampup"] > 0


# ---------------------------------------------------------------------------------------------- tiny runs (slow)
TINY_SETS = [
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "phase1.model.image_size=16", "phase1.model.z_dim=8", "phase1.model.g_width=4", "phase1.model.d_width=4",
    "phase1.model.max_width=16", "phase1.model.num_fixed=4", "phase1.data.image_size=16", "phase1.data.batch_size=4",
    "phase1.trainer.max_steps=4", "phase1.callbacks.negative_bank={first_steps: 4, every_n_steps: 2, per_save: 4, max_images: 16}",
    "phase1.callbacks.sample_grid={every_n_steps: 2}", "phase1.callbacks.checkpoint={every_n_train_steps: 2, every_n_epochs: null}",
    "phase2.model.image_size=16", "phase2.model.width=4", "phase2.model.max_width=8", "phase2.data.image_size=16",
    "phase2.data.batch_size=8", "phase2.data.epoch_size=16", "phase2.data.val_fraction=0.3", "phase2.trainer.max_epochs=1",
    "phase3.model.add_blocks={8: 1}", "phase3.model.adain_at=feat8", "phase3.model.snapshot_epoch=1",
    "phase3.model.num_fixed=4", "phase3.data.image_size=16", "phase3.data.batch_size=4", "phase3.trainer.max_epochs=2",
    "phase3.trainer.limit_train_batches=2", "eval.enabled=false",
]


@pytest.mark.slow
def test_profile_pipeline_runs_at_tiny_size(tmp_path):
    make_celeba(tmp_path / "faces", n=240, partition=False, seed=1, size=(16, 20))
    run = tmp_path / "run"
    cfg = P.load_config(PROFILE / "method_a.yaml", [f"data_root={tmp_path / 'faces'}", *TINY_SETS])
    assert P.main(["--config", _write(tmp_path, cfg, "tiny.yaml"), "--run-dir", str(run)]) == 0
    for phase in P.PHASES:
        done = json.loads((run / phase / "done.json").read_text())
        assert done["joint_free"]["joint"] == 0 and done["joint_free"]["images"] > 0, phase
    import torch

    state = torch.load(P.RunLayout(run).final("phase1"), map_location="cpu", weights_only=True)["state_dict"]
    assert "augment_pipe.p" in state and "ada.stats" in state
    state3 = torch.load(P.RunLayout(run).final("phase3"), map_location="cpu", weights_only=True)["state_dict"]
    assert "augment_pipe.p" in state3


@pytest.mark.slow
def test_profile_bench_config_runs_at_toy_size(tmp_path):
    from multifeat.cli import main

    make_celeba(tmp_path / "data", n=240, partition=False, seed=1, size=(20, 24))
    out = tmp_path / "out"
    code = main(["bench", "--config", str(PROFILE / "bench.yaml"), "--smoke", "--out", str(out),
                 "--set", f"data.root={tmp_path / 'data'}", "--set", "data.batch_size=8",
                 "--set", "method_b.distance=pixel-gradient", "--set", "method_b.search=cutoffs",
                 "--set", "eval.n=12", "--set", "eval.n_real=12", "--seeds", "0", "--methods", "a,f"])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["data"]["source"] == "celeba"
    assert res["config"]["gan"]["ema_decay"] == 0.99


def test_the_cached_celeba_judge_uses_the_profile_judge_recipe():
    """`multifeat evaluate` and the pipeline train their CelebA judge with the recipe of the stand-alone config,
    the one whose balanced accuracy the docs report."""
    from multifeat.eval.evaluator_cache import CELEBA_JUDGE_RECIPE

    cfg = yaml.safe_load((PROFILE / "evaluator.yaml").read_text())
    init = cfg["model"]["init_args"]
    assert {k: init[k] for k in CELEBA_JUDGE_RECIPE} == CELEBA_JUDGE_RECIPE
    assert CELEBA_JUDGE_RECIPE["geometric"] > 0 and CELEBA_JUDGE_RECIPE["balance"] is True
    pipe = yaml.safe_load((PROFILE / "method_a.yaml").read_text())
    assert pipe["eval"]["args"]["evaluator-steps"] == cfg["trainer"]["max_steps"]
    import inspect

    from multifeat.eval.evaluator_cache import cached_celeba_evaluator

    assert inspect.signature(cached_celeba_evaluator).parameters["max_steps"].default == cfg["trainer"]["max_steps"]
    bench = yaml.safe_load((PROFILE / "bench.yaml").read_text())
    assert bench["evaluator"]["max_steps"] == cfg["trainer"]["max_steps"]
    assert cfg["seed_everything"] == 10000  # the cache's DEFAULT_EVALUATOR_SEED
