"""``multifeat mix`` end to end on a tiny generator and tiny PNG folders."""

import json

import numpy as np
import pytest
import torch
from mixing_helpers import tiny_generator
from PIL import Image

from multifeat.cli import main as cli_main
from multifeat.commands.mix import main as mix_main
from multifeat.io.network_files import save_network


def _folder(path, n, seed, size=20):
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(path / f"img{i}.png")
    return path


@pytest.fixture
def setup(tmp_path):
    save_network(tiny_generator(0, resolution=16), tmp_path / "g.pt")
    return tmp_path, _folder(tmp_path / "a", 2, 0), _folder(tmp_path / "b", 2, 1)


FAST = ["--steps", "4", "--w-avg-samples", "64", "--no-progress", "--perceptual", "pixel"]


def test_mix_writes_every_output(setup):
    tmp, a, b = setup
    out = tmp / "out"
    assert mix_main(["--generator", str(tmp / "g.pt"), "--a", str(a), "--b", str(b), "--out", str(out),
                     "--space", "w+", "--cutoff", "3", *FAST]) == 0
    for name in ("projections.pt", "grid.png", "projections_grid.png", "scores.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "projected" / "a").iterdir()) == ["000_img0.png", "001_img1.png"]
    assert sorted(p.name for p in (out / "mixes").iterdir()) == ["000_a0_b0.png", "001_a1_b1.png"]

    proj = torch.load(out / "projections.pt", weights_only=True)
    assert proj["a"]["ws"].shape == (2, 6, 32) and proj["space"] == "w+" and proj["a"]["files"] == ["img0.png", "img1.png"]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["distance"] == "pixel-gradient"
    assert {"mse", "psnr", "perceptual", "start", "file"} <= set(scores["projection"]["b"][0])
    assert scores["mix"]["layers_from_a"] == [0, 1, 2] and scores["mix"]["mode"] == "cutoff"

    # the mixes on disk are the mixes of the saved styles and noise maps: layers 0-2 from a, the rest from b
    from multifeat.mixing import StyleMixer
    from multifeat.mixing.projection import ProjectionResult

    mixer = StyleMixer(tmp / "g.pt", distance="pixel-gradient")

    def result(side):
        d = proj[side]
        return ProjectionResult(ws=d["ws"], space="w+", noise=d["noise"], images=torch.zeros(0), errors=[],
                                start_errors=[], distance="", distance_description="", loss_history=torch.zeros(0))

    again = mixer.mix(result("a"), result("b"), cutoff=3)
    on_disk = torch.from_numpy(np.array(Image.open(out / "mixes" / "001_a1_b1.png"))).permute(2, 0, 1).float()
    assert (on_disk / 127.5 - 1 - again.images[1]).abs().max() <= 1 / 127.5 + 1e-6
    # grid: 3 rows (a, b, mixes) of 2 columns of 16 px with 2 px padding
    assert Image.open(out / "grid.png").size == (2 + 2 * 18, 2 + 3 * 18)

    # a second run into the same folder is refused; --overwrite allows it
    args = ["mix", "--generator", str(tmp / "g.pt"), "--a", str(a), "--b", str(b), "--out", str(out), *FAST]
    assert cli_main(args) == 2
    assert mix_main(args[1:] + ["--overwrite", "--preset", "middle"]) == 0
    assert json.loads((out / "scores.json").read_text())["mix"]["layers_from_a"] == [4, 5]


def test_guided_mix_with_classifier_checkpoints(setup):
    from lightning import Trainer

    from multifeat.phases.feature_classifier import FeatureClassifier

    tmp, a, b = setup
    for feature in ("bald", "beard"):
        torch.manual_seed(0 if feature == "bald" else 1)
        fc = FeatureClassifier(image_size=16, feature=feature, width=4, max_width=8)
        trainer = Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1,
                          enable_progress_bar=False, enable_model_summary=False)
        trainer.strategy.connect(fc)
        trainer.save_checkpoint(tmp / f"{feature}.ckpt")
    out = tmp / "guided"
    assert mix_main(["--generator", str(tmp / "g.pt"), "--a", str(a), "--b", str(b), "--out", str(out), "--guided",
                     "--classifier-a", str(tmp / "bald.ckpt"), "--classifier-b", str(tmp / "beard.ckpt"),
                     "--search", "cutoffs", "--pairing", "all", *FAST]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert len(scores["mix"]["mixes"]) == 4 and scores["mix"]["mode"] == "guided"
    guided = scores["guided"]
    assert guided["settings"]["num_candidates"] == 10 and len(guided["pairs"]) == 4
    for row, pair in zip(scores["mix"]["mixes"], guided["pairs"]):
        assert row["layers_from_a"] == pair["layers_from_a"]
        # the scores re-measured on the written mixes are those the search reported
        assert row["p_feature_a"] == pytest.approx(pair["p1"], abs=1e-5)
        assert row["joint"] == pytest.approx(pair["p1"] * pair["p2"], abs=1e-5)
    assert "p_feature_a" in scores["projection"]["a"][0]


def test_clear_errors(setup, capsys):
    tmp, a, b = setup
    (tmp / "empty").mkdir()
    base = ["mix", "--generator", str(tmp / "g.pt"), "--out", str(tmp / "o"), *FAST]
    assert cli_main(base + ["--a", str(tmp / "empty"), "--b", str(b)]) == 2
    assert "contains no images" in capsys.readouterr().err
    assert cli_main(base + ["--a", str(tmp / "nope"), "--b", str(b)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(base + ["--a", str(a), "--b", str(b), "--preset", "fine"]) == 2
    assert "preset 'fine' selects no layer" in capsys.readouterr().err
    assert cli_main(base + ["--a", str(a), "--b", str(b), "--guided"]) == 2
    assert "--guided needs --classifier-a" in capsys.readouterr().err
    assert cli_main(["mix", "--generator", str(tmp / "missing.pkl"), "--a", str(a), "--b", str(b), "--out", str(tmp / "o")]) == 2
    assert "generator file" in capsys.readouterr().err


def test_default_lpips_without_weight_files_is_a_clear_error(setup, capsys, monkeypatch):
    import importlib.util

    from multifeat.commands.mix import PERCEPTUAL_CHOICES
    from multifeat.mixing.distance import DISTANCE_ALIASES, DISTANCE_KINDS

    assert PERCEPTUAL_CHOICES == (*DISTANCE_KINDS, *DISTANCE_ALIASES)
    tmp, a, b = setup
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp / "hub"))  # nothing cached
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "lpips" else real_find_spec(name, *a, **k))
    out = tmp / "o"
    base = ["mix", "--generator", str(tmp / "g.pt"), "--a", str(a), "--b", str(b), "--out", str(out),
            "--steps", "4", "--w-avg-samples", "64", "--no-progress"]
    for extra in ([], ["--perceptual", "lpips"], ["--distance", "auto"]):
        assert cli_main(base + extra) == 2
        err = capsys.readouterr().err
        assert "vgg16-397923af.pth" in err and "weights/v0.1/vgg.pth" in err and "--perceptual pixel" in err
        assert not out.exists()  # refused before anything was written
    # the former option name and value still work
    assert cli_main(base + ["--distance", "pixel-gradient"]) == 0
    assert json.loads((out / "scores.json").read_text())["distance"] == "pixel-gradient"
