"""Method B on projected targets: PSNR, held-out synthetic targets, the per-layer table, the judged
rates and ``multifeat mix --held-out-synthetic ... --guided --judge`` end to end on tiny networks."""

import json
import math

import pytest
import torch
from mixing_helpers import LayerMeanClassifier, PixelGenerator, tiny_generator

from multifeat.errors import ConfigError
from multifeat.eval.metrics import wilson_interval
from multifeat.mixing import StyleMixer
from multifeat.mixing.projection import ProjectionResult
from multifeat.mixing.targets import (
    judge_images,
    layer_effects,
    mix_projected_targets,
    psnr,
    render_report,
    synthetic_targets,
)


def test_psnr_against_hand_computation():
    target = torch.zeros(2, 1, 2, 2)
    image = torch.zeros(2, 1, 2, 2)
    image[0] = 0.5                                                  # mse 0.25 -> 10 log10(16) = 12.0412 dB
    image[1, 0] = torch.tensor([[0.2, -0.4], [0.0, 1.7]])           # 1.7 is clamped to 1: mse (.04+.16+0+1)/4 = .3
    got = psnr(image, target)
    assert got[0].item() == pytest.approx(12.041199826559248, abs=1e-5)
    assert got[1].item() == pytest.approx(10 * math.log10(4 / 0.3), abs=1e-5)


def test_synthetic_targets_show_one_feature_and_are_held_out():
    from multifeat.data import SyntheticFaces

    bald = synthetic_targets("bald", "beard", 4, 16, seed=30000)
    assert bald.shape == (4, 3, 16, 16) and bald.min() >= -1 and bald.max() <= 1
    ds = SyntheticFaces(num_samples=4, image_size=16, seed=30000, require={"bald": True, "beard": False})
    assert torch.equal(bald, torch.stack([ds[i]["image"] for i in range(4)]))
    assert all(ds.attributes(i)[0] == 1 and ds.attributes(i)[1] == 0 for i in range(4))  # bald, no beard
    train = SyntheticFaces(num_samples=4, image_size=16, seed=0, require={"bald": True, "beard": False})
    assert not torch.equal(bald[0], train[0]["image"])
    with pytest.raises(ConfigError, match=">= 1"):
        synthetic_targets("bald", "beard", 0, 16)


def _result(ws):
    return ProjectionResult(ws=ws, space="w+", noise=None, images=torch.zeros(0), errors=[], start_errors=[],
                            distance="", distance_description="", loss_history=torch.zeros(0))


def test_layer_effects_find_the_layers_each_classifier_reads():
    """PixelGenerator draws its styles; classifier 1 reads layers 0-1, classifier 2 layer 5. a = +1, b = -1."""
    g = PixelGenerator(num_ws=8, w_dim=4, resolution=8)
    mixer = StyleMixer(g, distance="pixel")
    a, b = _result(torch.ones(3, 8, 4)), _result(-torch.ones(3, 8, 4))
    a.images, b.images = mixer.synthesize(a.ws), mixer.synthesize(b.ws)
    c1, c2 = LayerMeanClassifier([0, 1]), LayerMeanClassifier([5], sign=-1.0)  # c2 high on b's pixels (-0.5)
    rows = layer_effects(mixer, a, b, c1, c2)
    low = 1 / (1 + math.exp(5))                                  # sigmoid(-5): b judged by c1, a judged by c2
    for r in rows:
        k = r["layer"]
        # b with layer k from a: c1 reads the mean of layers 0-1 -> 0 (sigmoid 0.5) when k is 0 or 1
        assert r["p1_with_layer_from_a"] == pytest.approx(0.5 if k in (0, 1) else low, abs=1e-4)
        assert r["gain_1"] == pytest.approx((0.5 - low) if k in (0, 1) else 0.0, abs=1e-4)
        # a with layer k from b: c2 reads layer 5 only -> sigmoid(5) when k == 5
        assert r["gain_2"] == pytest.approx((1 - 2 * low) if k == 5 else 0.0, abs=1e-4)
        assert r["resolution"] == 4 * 2 ** (k // 2)


def test_judge_images_counts_and_wilson_interval():
    p1 = torch.tensor([0.9, 0.8, 0.2, 0.6, 0.5])
    p2 = torch.tensor([0.7, 0.1, 0.9, 0.55, 0.49])
    j = judge_images(lambda x: p1[: x.shape[0]], lambda x: p2[: x.shape[0]], torch.zeros(5, 3, 4, 4))
    assert j["feature_1"]["count"] == 4 and j["feature_2"]["count"] == 3
    assert j["joint"]["count"] == 2 and j["joint"]["rate"] == pytest.approx(0.4)   # images 0 and 3
    assert j["joint"]["ci95"] == list(wilson_interval(2, 5))


def test_mix_projected_targets_end_to_end_on_a_tiny_generator():
    mixer = StyleMixer(tiny_generator(0, resolution=16), distance="pixel")
    ta, tb = synthetic_targets("bald", "beard", 2, 16), synthetic_targets("beard", "bald", 2, 16)

    def bright(x):   # guide / judge 1: mean brightness
        return torch.sigmoid(4 * x.mean(dim=(1, 2, 3)))

    def red(x):      # guide / judge 2: red minus blue
        return torch.sigmoid(4 * (x[:, 0] - x[:, 2]).mean(dim=(1, 2)))

    res = mix_projected_targets(mixer, ta, tb, bright, red, judge_1=bright, judge_2=red, num_steps=3, w_avg_samples=64,
                                search="cutoffs", lpips=(None, "no LPIPS weight files here."))
    assert res.images.shape == (2, 3, 16, 16) and len(res.layers) == mixer.num_ws
    rows = res.grid_rows()
    assert rows.shape == (10, 3, 16, 16)
    assert torch.equal(rows[0], ta[0]) and torch.equal(rows[2], tb[0]) and torch.equal(rows[7], tb[1])
    assert torch.allclose(rows[1], res.proj_a.images[0].clamp(-1, 1)) and torch.allclose(rows[9], res.images[1].clamp(-1, 1))
    rec = res.reconstruction
    assert rec["lpips_available"] is False and rec["lpips_missing"] == "no LPIPS weight files here."
    assert "lpips" not in rec["a"]
    assert rec["b"]["psnr"] == [round(float(x), 3) for x in psnr(res.proj_b.images, tb)]
    mixes = res.judged["mixes"]
    k = sum(1 for x, y in zip(mixes["p1"], mixes["p2"]) if x >= 0.5 and y >= 0.5)
    assert mixes["joint"]["count"] == k and mixes["p1"] == [round(float(x), 4) for x in bright(res.images)]
    report = render_report(res, "g.pt")
    assert "**LPIPS not computed**: no LPIPS weight files here. PSNR only." in report
    assert report.count("\n| ") >= mixer.num_ws + 5
    json.dumps(res.to_dict())
    with pytest.raises(ConfigError, match="pair up"):
        mix_projected_targets(mixer, ta, tb[:1], bright, red, num_steps=1, w_avg_samples=16)


def test_mix_command_held_out_synthetic_guided_and_judged(tmp_path, capsys):
    from lightning import Trainer

    from multifeat.commands.mix import main as mix_main
    from multifeat.eval.evaluator import AttributeEvaluator
    from multifeat.io.network_files import save_network

    save_network(tiny_generator(0, resolution=16), tmp_path / "g.pt")
    for name, seed in (("guide", 0), ("judge", 1)):
        torch.manual_seed(seed)
        ev = AttributeEvaluator(image_size=16, width=4, max_width=8)
        trainer = Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1,
                          enable_progress_bar=False, enable_model_summary=False)
        trainer.strategy.connect(ev)
        trainer.save_checkpoint(tmp_path / f"{name}.ckpt")
    out = tmp_path / "out"
    assert mix_main(["--generator", str(tmp_path / "g.pt"), "--held-out-synthetic", "2", "--out", str(out), "--guided",
                     "--classifier-a", str(tmp_path / "guide.ckpt"), "--classifier-b", str(tmp_path / "guide.ckpt"),
                     "--feature-a", "bald", "--feature-b", "beard", "--judge", str(tmp_path / "judge.ckpt"),
                     "--search", "cutoffs", "--steps", "3", "--w-avg-samples", "64", "--no-progress",
                     "--perceptual", "pixel"]) == 0
    printed = capsys.readouterr().out
    assert "reconstruction quality: PSNR" in printed and "mixes judged bald and beard" in printed
    assert sorted(p.name for p in (out / "targets" / "a").iterdir()) == ["000.png", "001.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["features"] == ["bald", "beard"] and len(metrics["guided"]["pairs"]) == 2
    assert metrics["judged"]["mixes"]["joint"]["n"] == 2 and len(metrics["layers"]) == 6
    assert set(metrics["judged"]) == {"threshold", "targets_a", "targets_b", "projections_a", "projections_b", "mixes"}
    from PIL import Image

    assert Image.open(out / "pairs_grid.png").size == (2 + 5 * 18, 2 + 2 * 18)   # 5 columns, one row per pair
    assert "What each style layer carries" in (out / "report.md").read_text()
    # the judge needs one-to-one pairs; targets folders and --held-out-synthetic exclude each other
    from multifeat.cli import main as cli_main

    base = ["mix", "--generator", str(tmp_path / "g.pt"), "--out", str(tmp_path / "o2"), "--steps", "1", "--perceptual", "pixel"]
    assert cli_main(base + ["--held-out-synthetic", "2", "--a", str(out / "targets" / "a")]) == 2
    assert "drop --a" in capsys.readouterr().err
    assert cli_main(base) == 2
    assert "--held-out-synthetic N" in capsys.readouterr().err
