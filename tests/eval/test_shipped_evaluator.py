"""The SyntheticFaces judge that ships inside the package: named by its hash, loadable, and right."""

import json

import pytest
import torch

from multifeat.data import SyntheticFaces
from multifeat.errors import CheckpointError, ConfigError
from multifeat.eval.evaluator import RECIPE_VERSION
from multifeat.eval.immature import IMMATURE_SEED, IMMATURE_STEPS
from multifeat.eval.shipped import (
    SHIPPED_SETTINGS,
    WEIGHTS_DIR,
    default_synthetic_evaluator,
    shipped_sizes,
    verify_shipped_file,
)
from multifeat.utils.files import file_sha256

SIZES = sorted(shipped_sizes())


def test_the_package_ships_a_32px_judge():
    assert 32 in SIZES, sorted(p.name for p in WEIGHTS_DIR.glob("*"))


@pytest.mark.parametrize("size", SIZES)
def test_shipped_file_matches_its_name_and_is_small(size):
    path = shipped_sizes()[size]
    digest = file_sha256(path)
    assert path.name == f"synthetic{size}-{digest[:16]}.pt"
    assert verify_shipped_file(path) == digest
    assert path.stat().st_size < 1_000_000  # weights only
    data = torch.load(path, weights_only=True)
    assert set(data) == {"format", "hyper_parameters", "multifeat", "state_dict"}
    assert data["multifeat"]["data_source"]["source"] == "synthetic"
    # made with the recipe and settings the code documents (not an older judge left in place)
    recipe, hp = data["multifeat"]["recipe"], data["hyper_parameters"]
    assert recipe["version"] == RECIPE_VERSION and recipe["robust"] is True and hp["robust"] is True
    assert hp["immature_fraction"] == SHIPPED_SETTINGS["immature_fraction"] and hp["immature_steps"] == list(IMMATURE_STEPS)
    assert hp["immature_seed"] == IMMATURE_SEED and hp["width"] == SHIPPED_SETTINGS["width"]


@pytest.mark.parametrize("size", SIZES)
def test_shipped_judge_reads_rendered_faces(size):
    ev, path, digest = default_synthetic_evaluator(size)
    assert ev.attributes == ("bald", "beard", "eyeglasses", "smiling") and not ev.training
    assert ev.checkpoint_path == str(path) and path.name.endswith(f"-{digest}.pt")
    for bald, beard in ((True, True), (True, False), (False, True), (False, False)):
        ds = SyntheticFaces(num_samples=24, image_size=size, seed=4242, require={"bald": bald, "beard": beard})
        x = torch.stack([it["image"] for it in ds.__getitems__(list(range(24)))])
        p = ev.predict_proba(x)
        rate_bald, rate_beard = float((p[:, 0] >= 0.5).float().mean()), float((p[:, 1] >= 0.5).float().mean())
        assert (rate_bald >= 0.9) if bald else (rate_bald <= 0.1), (bald, beard, rate_bald)
        assert (rate_beard >= 0.9) if beard else (rate_beard <= 0.1), (bald, beard, rate_beard)


def test_a_damaged_or_missing_shipped_file_is_refused(tmp_path):
    src = shipped_sizes()[32]
    bad = tmp_path / src.name
    data = bytearray(src.read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged or was replaced"):
        default_synthetic_evaluator(32, folder=tmp_path)
    with pytest.raises(ConfigError, match="no shipped SyntheticFaces evaluator for 128 px.*shipped sizes: 32"):
        default_synthetic_evaluator(128, folder=tmp_path)


def test_cached_evaluator_and_evaluate_default_to_the_shipped_judge(tmp_path, monkeypatch):
    import multifeat.eval.evaluator_cache as cache
    from multifeat.cli import main as cli_main
    from multifeat.utils.images import save_image

    def no_training(**kw):
        raise AssertionError("the shipped judge must be used, nothing trained")

    monkeypatch.setattr(cache, "train_evaluator", no_training)
    ev, path = cache.cached_evaluator(32, cache_dir=tmp_path, log=None)
    assert path == shipped_sizes()[32]
    folder = tmp_path / "imgs"
    folder.mkdir()
    ds = SyntheticFaces(num_samples=6, image_size=32, seed=99)
    for it in ds.__getitems__(list(range(6))):
        save_image(it["image"], folder / f"{it['index']:03d}.png")
    out = tmp_path / "out"
    assert cli_main(["evaluate", "--images", str(folder), "--features", "bald", "--real", "none", "--out", str(out),
                     "--cache-dir", str(tmp_path / "c")]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["evaluator"]["path"] == str(path) and m["evaluator"]["sha256"] == file_sha256(path)
    assert file_sha256(path) in (out / "report.md").read_text()
