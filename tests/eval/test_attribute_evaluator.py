"""The attribute evaluator: trains to high accuracy, stores its accuracy and metadata, loads back."""

import pytest
import torch

from multifeat.errors import CheckpointError
from multifeat.eval.evaluator import (
    DEFAULT_EVALUATOR_SEED,
    AttributeEvaluator,
    load_evaluator,
)
from multifeat.eval.evaluator_cache import cached_evaluator, evaluator_cache_key


def test_forward_shapes_and_probabilities():
    m = AttributeEvaluator(image_size=16, attributes=("bald", "beard"), width=8, max_width=16)
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    assert m(x).shape == (5, 2)
    assert m.features(x).shape == (5, m.feature_dim)
    big = torch.rand(3, 3, 32, 32) * 2 - 1
    p = m.predict_proba(big)  # other sizes are resized (bilinear, antialiased), in eval mode
    assert p.shape == (3, 2) and m.training
    with torch.no_grad():
        small = torch.nn.functional.interpolate(big, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
        expected = torch.sigmoid(m.eval()(small))
    torch.testing.assert_close(p, expected)


def test_checkpoint_metadata_and_loading(quick_evaluator_ckpt):
    ckpt = torch.load(quick_evaluator_ckpt, weights_only=True)
    meta = ckpt["multifeat"]
    assert meta["phase"] == "evaluator" and meta["image_size"] == 16
    assert meta["attributes"] == ["bald", "beard", "eyeglasses", "smiling"]
    assert set(meta["val_accuracy"]) == set(meta["attributes"])
    m = load_evaluator(quick_evaluator_ckpt)
    assert isinstance(m, AttributeEvaluator) and not m.training
    assert m.val_accuracy == pytest.approx(meta["val_accuracy"])
    # synthetic data, robust, fraction null: the recipe's 0.25 of generator samples per batch, which the
    # file records and a loaded module keeps (a copy written from it says the same)
    assert meta["recipe"]["immature_fraction"] == 0.25 and m.immature_in_use == 0.25
    assert m.checkpoint_metadata()["recipe"]["immature_fraction"] == 0.25


def test_shipped_judge_reports_the_immature_fraction_it_was_trained_with():
    from multifeat.eval.shipped import default_synthetic_evaluator

    module, path, _ = default_synthetic_evaluator(32)
    assert module.hparams["immature_fraction"] == 1.0 and module.immature_in_use == 1.0, path
    assert module.checkpoint_metadata()["recipe"]["immature_fraction"] == 1.0


def test_load_evaluator_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError, match="nope.ckpt"):
        load_evaluator(missing)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "multifeat": {"phase": "phase1", "class_path": "x.Y"}}, other)
    with pytest.raises(CheckpointError, match="expected a evaluator checkpoint|evaluator"):
        load_evaluator(other)


def test_cache_key_depends_on_config():
    a = evaluator_cache_key(image_size=32, seed=DEFAULT_EVALUATOR_SEED)
    assert a == evaluator_cache_key(seed=DEFAULT_EVALUATOR_SEED, image_size=32)
    assert a != evaluator_cache_key(image_size=64, seed=DEFAULT_EVALUATOR_SEED)


def test_cached_evaluator_reuses_file(tmp_path, quick_evaluator_ckpt, monkeypatch):
    import multifeat.eval.evaluator_cache as ae

    calls = []

    def fake_train(**kw):
        calls.append(kw)
        import shutil

        shutil.copy(quick_evaluator_ckpt, kw["out_path"])
        return kw["out_path"]

    monkeypatch.setattr(ae, "train_evaluator", fake_train)
    m1, p1 = cached_evaluator(16, cache_dir=tmp_path, max_steps=4, num_samples=256, log=None)
    m2, p2 = cached_evaluator(16, cache_dir=tmp_path, max_steps=4, num_samples=256, log=None)
    assert p1 == p2 and p1.parent == tmp_path and len(calls) == 1
    assert calls[0]["seed"] == DEFAULT_EVALUATOR_SEED


@pytest.mark.slow
def test_evaluator_reaches_high_accuracy(trained_evaluator_ckpt):
    """32 px, 300 steps on SyntheticFaces (seed 10 000): every attribute >= 90 % on held-out faces
    from an unrelated seed, checked here independently of the stored validation numbers."""
    from multifeat.data import SyntheticFaces

    m = load_evaluator(trained_evaluator_ckpt)
    assert min(m.val_accuracy.values()) >= 0.9, m.val_accuracy
    ds = SyntheticFaces(num_samples=256, image_size=32, seed=31_337)
    items = ds.__getitems__(list(range(len(ds))))
    x = torch.stack([it["image"] for it in items])
    y = torch.stack([it["attrs"] for it in items])
    acc = ((m.predict_proba(x) >= 0.5).float() == y).float().mean(0)
    assert bool((acc >= 0.9).all()), dict(zip(m.attributes, acc.tolist()))


@pytest.mark.slow
def test_lightning_cli_config_trains_and_checkpoints(tmp_path, repo_root, monkeypatch):
    """experiments/evaluator.yaml runs through `multifeat fit` (shrunk to 16 px and 4 steps)."""
    from multifeat.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MULTIFEAT_CACHE", str(tmp_path / "cache"))  # the immature-generator bank goes there
    rc = cli_main([
        "fit", "--config", str(repo_root / "experiments" / "evaluator.yaml"), "--model.init_args.immature_steps", "[1, 2]",
        "--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "1",
        "--model.init_args.image_size", "16", "--model.init_args.width", "8", "--model.init_args.max_width", "16",
        "--data.init_args.image_size", "16", "--data.init_args.num_samples", "160", "--data.init_args.batch_size", "16",
    ])
    assert rc == 0
    last = tmp_path / "runs" / "evaluator" / "checkpoints" / "last.ckpt"
    m = load_evaluator(last)
    assert m.image_size == 16 and m.attributes == ("bald", "beard", "eyeglasses", "smiling")
    assert set(m.val_accuracy) == set(m.attributes)


def test_cache_path_names_the_recipe_version(tmp_path, monkeypatch):
    """Every cached evaluator (synthetic or CelebA) is keyed by the training recipe: a new recipe never
    reuses an old file, and the same recipe and settings always find the same file."""
    import multifeat.eval.evaluator_cache as AE

    cfg = {"image_size": 32, "seed": 1, "max_steps": 10}
    a = AE.cached_evaluator_path("evaluator", cfg, tmp_path)
    assert a == tmp_path / f"evaluator-S32-{evaluator_cache_key(**cfg, version=AE.RECIPE_VERSION)}.ckpt"
    assert AE.cached_evaluator_path("evaluator", dict(cfg), tmp_path) == a
    assert AE.cached_evaluator_path("evaluator-celeba", cfg, tmp_path).name.startswith("evaluator-celeba-S32-")
    monkeypatch.setattr(AE, "RECIPE_VERSION", AE.RECIPE_VERSION + 1)
    assert AE.cached_evaluator_path("evaluator", cfg, tmp_path) != a
