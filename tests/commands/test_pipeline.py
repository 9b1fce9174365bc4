"""``multifeat pipeline``: config handling (quick) and a tiny end-to-end run with resume (slow)."""

import json
import os
from pathlib import Path

import pytest
import yaml

from multifeat.commands import pipeline as P
from multifeat.errors import CheckpointError, ConfigError
from multifeat.pipeline import checks, evaluation, phases
from multifeat.utils.files import file_sha256

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
        phases.build_phase(cfg, layout, "phase3")
    cfg = P.load_config(_write(tmp_path, TINY), ["phase1.trainer.default_root_dir=x"])
    with pytest.raises(ConfigError, match="default_root_dir is set by the pipeline"):
        phases.build_phase(cfg, layout, "phase1")
    cfg = P.load_config(_write(tmp_path, TINY), ["phase2.callbacks.checkpoint.save_top_k=0"])
    with pytest.raises(ConfigError, match="saves no checkpoint before the end"):
        phases.build_phase(cfg, layout, "phase2")
    cfg = P.load_config(_write(tmp_path, TINY), ["phase3.trainer.reload_dataloaders_every_n_epochs=0"])
    with pytest.raises(ConfigError, match="must be 1"):
        phases.build_phase(cfg, layout, "phase3")


def test_phase3_without_earlier_phases_names_the_missing_checkpoint(tmp_path):
    layout = P.RunLayout(tmp_path / "run")
    cfg = P.load_config(_write(tmp_path, TINY))
    model, data, trainer_kw, callbacks = phases.build_phase(cfg, layout, "phase3")
    assert trainer_kw["reload_dataloaders_every_n_epochs"] == 1
    assert model.hparams.g1_ckpt == str(layout.final("phase1"))
    with pytest.raises(CheckpointError, match=r"g1_ckpt '.*phase1/checkpoints/final.ckpt' does not exist: run phase 1 first"):
        model.configure_optimizers()


def test_eval_argv():
    assert evaluation.eval_argv({"features": ["bald", "beard"], "n": 8, "evaluator_steps": 3, "x": None, "flag": True, "off": False}) == [
        "--features", "bald,beard", "--n", "8", "--evaluator-steps", "3", "--flag"]


def test_demo_config_is_valid(repo_root):
    cfg = P.load_config(repo_root / "experiments/method_a.yaml")
    assert cfg["phase1"]["model"]["init_args"]["image_size"] == cfg["phase3"]["data"]["init_args"]["image_size"] == 32
    snap, epochs = cfg["phase3"]["model"]["init_args"]["snapshot_epoch"], cfg["phase3"]["trainer"]["max_epochs"]
    assert 0 < snap < epochs
    celeba = P.load_config(repo_root / "experiments/celeba/method_a.yaml")
    assert celeba["phase3"]["data"]["init_args"]["source"] == "celeba"


# ---------------------------------------------------------------------------------------------- end to end
def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and p.parent.name not in ("version_0", "version_1")}


@pytest.mark.slow
def test_pipeline_end_to_end_resume_and_skip(tmp_path, monkeypatch, capsys, immature_bank_16):
    monkeypatch.setenv("MULTIFEAT_CACHE", str(tmp_path / "cache"))
    immature_bank_16(tmp_path / "cache" / "evaluators")
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
    changed = [k for k in before if after.get(k) != before[k] and not k.startswith(("summary", "pipeline.log"))]
    assert changed == []

    # an unfinished phase 3 (no done.json) resumes from its last.ckpt with more epochs; 1-2 untouched;
    # the evaluation sees the new G3 and runs again (the summary reports the new numbers)
    old_eval = json.loads((run / "eval/done.json").read_text())
    os.remove(run / "phase3/done.json")
    assert P.main(["--config", cfg_path, "--run-dir", str(run), "--set", "phase3.trainer.max_epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "phase3: resuming from" in out and "phase2: finished earlier, skipped" in out
    assert "eval: phase3 checkpoint(s) changed since the last evaluation; evaluating again" in out
    done3 = json.loads((run / "phase3/done.json").read_text())
    assert done3["resumed"] is True and done3["epochs"] == 3
    after2 = _mtimes(run)
    assert all(after2[k] == before[k] for k in before if k.startswith(("phase1/", "phase2/")))
    new_eval = json.loads((run / "eval/done.json").read_text())
    assert new_eval["inputs"]["phase3"] == file_sha256(run / "phase3/checkpoints/final.ckpt") != old_eval["inputs"]["phase3"]
    assert new_eval["inputs"]["phase1"] == old_eval["inputs"]["phase1"]
    summary = json.loads((run / "summary.json").read_text())
    assert [(p["name"], p["status"]) for p in summary["phases"]][2:] == [("phase3", "resumed"), ("eval", "ran")]


# ---------------------------------------------------------------------------------------------- joint-free premise
@pytest.mark.parametrize("value", ["bald", ["bald"], ["bald", "bald"], [1, 2]])
def test_joint_free_must_list_two_distinct_features(tmp_path, value):
    with pytest.raises(ConfigError, match="joint_free must list two or more distinct feature names"):
        P.load_config(_write(tmp_path, {**TINY, "joint_free": value}))


def _joint_in_batches(data, features=("bald", "beard")) -> tuple[int, int]:
    """(images, images with all features), counted on the rendered training batches' labels."""
    names = list(data.attribute_names)
    cols = [names.index(f) for f in features]
    n = joint = 0
    for batch in data.train_dataloader():
        attrs = batch["attrs"][:, cols] > 0.5
        n += attrs.shape[0]
        joint += int(attrs.all(dim=1).sum())
    return n, joint


def test_joint_free_config_refuses_a_training_set_with_joint_images(tmp_path):
    from multifeat.data.guard import JointImageError

    layout = P.RunLayout(tmp_path / "run")
    cfg = P.load_config(_write(tmp_path, {**TINY, "joint_free": ["bald", "beard"]}),
                        ["phase1.data.require={bald: true}", "phase1.data.num_samples=64"])
    _, data, _, _ = phases.build_phase(cfg, layout, "phase1")
    n, joint = _joint_in_batches(data)  # independent count: the labels of the batches a fit would see
    assert n == 64 and joint > 0
    with pytest.raises(JointImageError, match=rf"phase1: the config declares joint_free: \[bald, beard\].* hold {joint} "
                                              rf"image\(s\) .*set 'train': {joint} of 64 images"):
        phases.check_joint_free(cfg, "phase1", data)


def test_joint_free_passes_beardless_bald_faces_and_without_the_key_nothing_is_counted(tmp_path):
    layout = P.RunLayout(tmp_path / "run")
    cfg = P.load_config(_write(tmp_path, {**TINY, "joint_free": ["bald", "beard"]}), ["phase1.data.num_samples=64"])
    _, data, _, _ = phases.build_phase(cfg, layout, "phase1")
    assert _joint_in_batches(data) == (64, 0)
    counts = phases.check_joint_free(cfg, "phase1", data)
    assert counts["joint"] == 0 and counts["images"] == 64
    _, data3, _, _ = phases.build_phase(cfg, layout, "phase3")
    counts3 = phases.check_joint_free(cfg, "phase3", data3)
    assert counts3["joint"] == 0 and set(counts3["splits"]) == {"before/train", "after/train"}
    assert phases.check_joint_free(P.load_config(_write(tmp_path, TINY)), "phase1", data) is None


def test_demo_and_celeba_configs_are_joint_free(repo_root):
    """Both Method-A configs declare joint_free, and the demo's phase-1, D2 and phase-3 data hold no bald+beard face."""
    from multifeat.data.classifier_data import FeatureClassifierDataModule

    celeba = P.load_config(repo_root / "experiments/celeba/method_a.yaml")
    assert celeba["joint_free"] == ["bald", "beard"]
    assert celeba["phase1"]["data"]["init_args"]["require"] == {"bald": True, "beard": False}
    assert celeba["phase2"]["data"]["init_args"]["require"] == {"beard": False}
    cfg = P.load_config(repo_root / "experiments/method_a.yaml", ["phase1.data.num_samples=256", "phase3.data.num_samples=256",
                                                                  "phase2.data.num_samples=256"])
    assert cfg["joint_free"] == ["bald", "beard"]
    layout = P.RunLayout(Path("/nonexistent"))
    _, data1, _, _ = phases.build_phase(cfg, layout, "phase1")
    _, data3, _, _ = phases.build_phase(cfg, layout, "phase3")
    kw = dict(cfg["phase2"]["data"]["init_args"])
    data2 = FeatureClassifierDataModule(**kw)  # the same data without the negative bank (phase 1 has not run)
    for phase, data in (("phase1", data1), ("phase2", data2), ("phase3", data3)):
        counts = phases.check_joint_free(cfg, phase, data)
        assert counts["joint"] == 0 and counts["labelled"] > 0, phase
    assert data2.source_counts("train")["positive"] > 0


# ---------------------------------------------------------------------------------------------- evaluation inputs
def test_eval_runs_are_named_after_the_run_and_pass_the_data_source(tmp_path):
    layout = P.RunLayout(tmp_path / "run")
    cfg = P.load_config(_write(tmp_path, TINY), ["logger=wandb", "name=demo"])
    runs = evaluation.eval_runs(cfg, layout)
    assert [(p, f) for p, f, _ in runs] == [("phase3", layout.eval), ("phase1", layout.eval / "baseline_phase1")]
    names = [argv[argv.index("--wandb-name") + 1] for _, _, argv in runs]
    assert names == ["demo/eval", "demo/eval-baseline"]
    assert all(argv[argv.index("--data") + 1] == "synthetic" for _, _, argv in runs)
    csv_runs = evaluation.eval_runs(P.load_config(_write(tmp_path, TINY)), layout)
    assert all("--wandb-name" not in argv and "--logger" not in argv for _, _, argv in csv_runs)
    celeba = P.load_config(_write(tmp_path, TINY), ["phase3.data.source=celeba", "phase3.data.root=/data/celeba"])
    (_, _, argv), _ = evaluation.eval_runs(celeba, layout)
    assert argv[argv.index("--data") + 1] == "celeba" and argv[argv.index("--celeba-root") + 1] == "/data/celeba"


def test_d2_verdict_grid_frames_each_image_by_its_probability(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    images = torch.stack([torch.full((3, 8, 8), v) for v in (-1.0, 0.0, 1.0)])  # black, grey, white
    probs = torch.tensor([0.9, 0.2, 0.5])
    path = checks.save_verdict_grid([("positive", images, probs), ("bank", images[:1], torch.tensor([0.1]))],
                               tmp_path / "grid.png", upscale=2)
    arr = np.asarray(Image.open(path).convert("RGB"))
    # the layout of save_verdict_grid: 16-px images in 3-px frames, cells of 16+6+4 px wide and 16+6+12+4 px high
    rows = [("positive", 0), ("bank", 1)]
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    label_w = max(8 + int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(n, font=font)) for n, _ in rows)
    expect = [(0, 0, checks.YES_COLOUR, 0), (0, 1, checks.NO_COLOUR, 128), (0, 2, checks.YES_COLOUR, 255), (1, 0, checks.NO_COLOUR, 0)]
    for r, k, colour, grey in expect:
        x, y = label_w + k * 26, 4 + r * 38
        assert tuple(arr[y + 1, x + 1]) == colour, (r, k)  # the frame
        centre = arr[y + 3 + 8, x + 3 + 8]
        assert all(abs(int(c) - grey) <= 1 for c in centre), (r, k, centre)  # the image itself
    assert arr.shape[1] == label_w + 3 * 26 + 4 and arr.shape[0] == 2 * 38 + 4


def test_an_evaluator_of_other_data_is_refused_before_any_training(tmp_path, monkeypatch):
    from multifeat.eval.evaluator import train_evaluator

    ev = train_evaluator(image_size=16, max_steps=2, num_samples=32, batch_size=8, out_path=tmp_path / "ev.ckpt",
                         accelerator="cpu")
    cfg = P.load_config(_write(tmp_path, TINY), [f"eval.args.evaluator={ev}", "phase3.data.source=celeba",
                                                 "phase3.data.root=/data"])
    with pytest.raises(ConfigError, match=r"evaluator '.*ev.ckpt' was trained on SyntheticFaces but the pipeline's "
                                          r"phase-3 data \(phase3.data\) comes from CelebA \(root /data\).*CelebA evaluator"):
        evaluation.check_eval_evaluator(cfg)
    evaluation.check_eval_evaluator(P.load_config(_write(tmp_path, TINY), [f"eval.args.evaluator={ev}"]))  # same data: accepted
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluation.check_eval_evaluator(P.load_config(_write(tmp_path, TINY), [f"eval.args.evaluator={tmp_path / 'none.ckpt'}"]))
    # the command refuses the same before it trains anything
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="was trained on SyntheticFaces"):
        P.main(["--config", _write(tmp_path, TINY), "--run-dir", str(run), "--set", f"eval.args.evaluator={ev}",
                "--set", "phase3.data.source=celeba", "--set", "phase3.data.root=/data"])
    assert not (run / "phase1").exists()


@pytest.mark.slow
def test_celeba_pipeline_trains_and_caches_a_celeba_evaluator(tmp_path, monkeypatch, capsys):
    """The tiny pipeline on a small CelebA-like tree, joint-free: every phase passes the guard and the
    evaluation judges G3 with an evaluator trained on that CelebA copy (none given)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from celeba_fixtures import make_celeba

    from multifeat.eval.evaluate import checkpoint_data_source

    make_celeba(tmp_path / "faces", n=160)
    monkeypatch.setenv("MULTIFEAT_CACHE", str(tmp_path / "cache"))
    root = str(tmp_path / "faces")
    sets = ["joint_free=[bald, beard]", "phase2.data.require={beard: false}", "phase2.data.val_fraction=0.3",
            "phase1.data.batch_size=4", "eval.args.real=none"]
    for phase in ("phase1", "phase2", "phase3"):
        sets += [f"{phase}.data.source=celeba", f"{phase}.data.root={root}"]
    cfg = P.load_config(_write(tmp_path, TINY), sets)
    for phase in ("phase1", "phase2", "phase3"):
        cfg[phase]["data"].pop("num_samples")  # SyntheticFaces only
    run = tmp_path / "run"
    assert P.main(["--config", _write(tmp_path, cfg, "celeba.yaml"), "--run-dir", str(run)]) == 0
    for phase in ("phase1", "phase2", "phase3"):
        done = json.loads((run / phase / "done.json").read_text())
        assert done["joint_free"]["joint"] == 0 and done["joint_free"]["images"] > 0
    m = json.loads((run / "eval/metrics.json").read_text())
    ev = Path(m["evaluator"]["path"])
    assert ev.parent == tmp_path / "cache" / "evaluators" and ev.name.startswith("evaluator-celeba-S16-")
    assert checkpoint_data_source(ev) == {"source": "celeba", "root": str(Path(root).resolve())}
    assert m["data_source"] == {"source": "celeba", "root": root}
    assert "| G3 (phase 3) |" in capsys.readouterr().out
