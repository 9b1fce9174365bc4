"""The benchmark's method e (Method B): held-out targets, projected and mixed as the paper did, guided by
the benchmark's two classifiers; the guard on the targets; ``styles: sampled``; bad settings.

Tiny networks (a 16 px StyleGAN2 of ``tests/helpers.py``, untrained 16 px classifiers) keep the tests
fast; the last one trains method e at ``--smoke`` size (a few seconds) and follows its mixes into the
runner.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_stylegan2

from multifeat.bench import method_b as MB
from multifeat.bench import protocol as B
from multifeat.bench import runner
from multifeat.bench.methods import BY_KEY, attribute_data
from multifeat.bench.training import Context
from multifeat.data import JointImageError, SyntheticFaces
from multifeat.errors import ConfigError
from multifeat.mixing import StyleMixer
from multifeat.mixing.targets import reconstruction_lpips
from multifeat.phases.feature_classifier import FeatureClassifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from celeba_fixtures import CELEBA_COLUMNS, make_celeba  # noqa: E402

FEATURES = ("bald", "beard")


def _ctx(log=None, **method_b) -> Context:
    cfg = B.load_config(None, preset="smoke")
    cfg["method_b"].update(method_b)
    return Context(cfg, FEATURES, log=log or (lambda m: None))


def _nets():
    torch.manual_seed(0)
    sg = tiny_stylegan2()
    clfs = []
    for i, feat in enumerate(FEATURES):
        torch.manual_seed(10 + i)
        clfs.append(FeatureClassifier(image_size=16, feature=feat, width=4, max_width=8).eval())
    return sg, clfs[0], clfs[1]


class Spy:
    """Records the arguments and the result of the real ``mix_projected_targets``."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, mixer, targets_a, targets_b, guide_1, guide_2, **kw):
        res = self.real(mixer, targets_a, targets_b, guide_1, guide_2, **kw)
        self.calls.append({"targets_a": targets_a, "targets_b": targets_b, "guide_1": guide_1, "guide_2": guide_2,
                           "kw": kw, "result": res})
        return res


def _plain_psnr(images: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over images of 10 log10(2^2 / mse), images clamped to [-1, 1], one image at a time."""
    vals = []
    for x, t in zip(images, targets):
        mse = float(((x.clamp(-1, 1) - t) ** 2).mean())
        vals.append(10 * math.log10(4 / mse))
    return sum(vals) / len(vals)


def test_projected_mixes_held_out_targets_with_the_benchmark_classifiers(monkeypatch, tmp_path):
    lines = []
    ctx = _ctx(log=lines.append)
    assert ctx.config["method_b"]["styles"] == "projected"          # the packaged default: the paper's procedure
    sg, clf1, clf2 = _nets()
    spy = Spy(MB.mix_projected_targets)
    monkeypatch.setattr(MB, "mix_projected_targets", spy)
    seed, n = 1, 3
    images, info = MB.guided_mixes(ctx, sg, clf1, clf2, n, sample_seed=0, seed=seed, work=tmp_path / "mixes")
    assert len(spy.calls) == 1
    call = spy.calls[0]
    res = call["result"]
    # the returned images are the mixes of the projected targets, nothing else
    assert images.shape == (n, 3, 16, 16) and torch.equal(images, res.images.detach().float().cpu())

    # targets: SyntheticFaces of seed 30000 + 1, rendered here independently, bald-only and beard-only
    tseed = 30000 + seed
    assert tseed not in ctx.config["seeds"] and info["targets"]["seed"] == tseed
    for key, want in (("targets_a", (1.0, 0.0)), ("targets_b", (0.0, 1.0))):
        req = {"bald": want[0] == 1, "beard": want[1] == 1}
        ds = SyntheticFaces(num_samples=n, image_size=16, seed=tseed, require=req)
        assert torch.equal(call[key], torch.stack([ds[i]["image"] for i in range(n)]))
        assert [tuple(ds.attributes(i)[:2]) for i in range(n)] == [want] * n   # never bald AND bearded
    # held out: no target is an image of the bald-only set the benchmark trains on with this seed
    train = attribute_data(ctx, seed, {"bald": True, "beard": False})
    train.setup("fit")
    train_imgs = torch.stack([train.train_set[i]["image"] for i in range(len(train.train_set))])
    assert not any(bool((train_imgs == t).flatten(1).all(dim=1).any()) for t in call["targets_a"])
    for side in ("a", "b"):
        assert info["targets"][side]["guard"] == {"images": n, "labelled": n, "joint": 0, "generated": 0}
        assert info["targets"][side]["n"] == info["targets"][side]["distinct"] == n

    # the guides are the benchmark's classifiers (never a judge), the settings the protocol's
    assert call["guide_1"].module is clf1 and call["guide_2"].module is clf2
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(call["guide_1"](x), clf1(x)) and torch.equal(call["guide_2"](x), clf2(x))
    assert call["kw"].get("judge_1") is None and call["kw"]["num_steps"] == 3 and call["kw"]["space"] == "w+"
    assert call["kw"]["search"] == ctx.config["method_b"]["search"]

    # the record: styles, steps, space, reconstruction quality, the layer tables
    assert info["styles"] == "projected" and info["project_steps"] == 3 and info["space"] == "w+"
    rec = info["reconstruction"]
    assert rec["psnr_a"] == pytest.approx(_plain_psnr(res.proj_a.images, call["targets_a"]), abs=2e-3)
    assert rec["psnr_b"] == pytest.approx(_plain_psnr(res.proj_b.images, call["targets_b"]), abs=2e-3)
    lp, why = reconstruction_lpips(StyleMixer(sg.G_ema, distance=ctx.config["method_b"]["distance"]))
    if lp is None:
        assert rec["lpips_available"] is False and rec["lpips_missing"] == why and why
    else:
        assert rec["lpips_available"] is True and rec["lpips_a"] >= 0
    assert [r["layer"] for r in info["layers"]] == list(range(sg.G_ema.num_ws))
    assert info["layer_splits"] == res.guided.candidates and len(info["layer_splits"]) > 1
    assert sum(info["chosen_splits"].values()) == n
    assert info["best_shared_layers"] == res.guided.best_shared["layers_from_a"]
    assert len(lines) == 1 and "SyntheticFaces of seed 30001, none joint" in lines[0]
    assert f"PSNR {rec['psnr_a']:.2f} / {rec['psnr_b']:.2f} dB" in lines[0]
    json.dumps(info)
    metrics = json.loads((tmp_path / "mixes" / "metrics.json").read_text())
    assert metrics["targets"]["seed"] == tseed and len(metrics["guided"]["pairs"]) == n
    assert "Reconstruction of the targets" in (tmp_path / "mixes" / "report.md").read_text()


def test_a_joint_target_stops_method_e_before_projection(monkeypatch):
    ctx = _ctx()
    joint = SyntheticFaces(num_samples=4, image_size=16, seed=30000, require={"bald": True, "beard": True})
    with pytest.raises(JointImageError, match=r"my targets: 4 of 4 targets carry all of bald, beard"):
        MB.check_targets(joint, FEATURES, None, "my targets")
    monkeypatch.setattr(MB, "synthetic_target_set", lambda feat, other, n, size, seed: joint)
    spy = Spy(MB.mix_projected_targets)
    monkeypatch.setattr(MB, "mix_projected_targets", spy)
    sg, clf1, clf2 = _nets()
    with pytest.raises(JointImageError, match="method e held-out bald targets"):
        MB.guided_mixes(ctx, sg, clf1, clf2, 4, sample_seed=0, seed=0)
    assert spy.calls == []


def test_target_seed_stays_away_from_the_other_seeds():
    ctx = _ctx()
    assert MB.target_seed(ctx, 0) == 30000 and MB.target_seed(ctx, 2) == 30002
    ctx.config["eval"]["real_seed"] = 30001
    with pytest.raises(ConfigError, match=r"seed 30001, which equals eval\.real_seed"):
        MB.target_seed(ctx, 1)


def test_sampled_styles_still_work_and_bad_styles_name_the_key(monkeypatch):
    sg, clf1, clf2 = _nets()

    def never(*a, **k):
        raise AssertionError("styles: sampled must not project")

    monkeypatch.setattr(MB, "mix_projected_targets", never)
    images, info = MB.guided_mixes(_ctx(styles="sampled"), sg, clf1, clf2, 3, sample_seed=0, seed=0)
    assert images.shape == (3, 3, 16, 16) and info["styles"] == "sampled" and info["pool"] == 2 * 3
    assert "targets" not in info and "reconstruction" not in info
    with pytest.raises(ConfigError, match=r"method_b\.styles must be 'projected' .* or 'sampled' .* got 'mixed'"):
        MB.guided_mixes(_ctx(styles="mixed"), sg, clf1, clf2, 3, sample_seed=0, seed=0)
    with pytest.raises(ConfigError, match=r"method_b\.styles"):
        B.load_config(None, overrides=["method_b.styles=mixed"])
    with pytest.raises(ConfigError, match=r"method_b\.project_space"):
        B.load_config(None, overrides=["method_b.project_space=z"])


def _celeba_ctx(root: Path) -> Context:
    ctx = _ctx()
    ctx.config["data"].update(source="celeba", root=str(root), derived=None)
    return ctx


def test_celeba_targets_come_from_the_test_split(tmp_path):
    info = make_celeba(tmp_path / "data", n=90, partition=True, seed=3, size=(20, 24))
    v = info["values"] > 0
    col = {c: i for i, c in enumerate(CELEBA_COLUMNS)}
    bald = v[:, col["Bald"]]
    beard = v[:, col["Goatee"]] | v[:, col["Mustache"]] | ~v[:, col["No_Beard"]]
    test = np.array(info["parts"]) == 2
    n_a, n_b = int((bald & ~beard & test).sum()), int((beard & ~bald & test).sum())
    assert n_a >= 2 and n_b >= 2
    n = n_a + 3                                          # more than the split has: repeated, all of them used
    ta, tb, got = MB.held_out_targets(_celeba_ctx(tmp_path / "data"), 0, n)
    assert ta.shape == tb.shape == (n, 3, 16, 16) and got["split"] == "celeba test"
    assert got["a"]["guard"] == {"images": n_a, "labelled": n_a, "joint": 0, "generated": 0}
    assert got["b"]["guard"]["images"] == n_b and got["a"]["distinct"] == n_a and got["b"]["distinct"] == min(n, n_b)
    # each target's solid colour is that of a test-split bald-only file of the fixture
    allowed = {info["colours"][i] for i in np.flatnonzero(bald & ~beard & test)}
    centre = ((ta[:, :, 8, 8] + 1) * 127.5).round().int().tolist()
    assert all(min(sum(abs(a - b) for a, b in zip(c, col_)) for col_ in allowed) <= 6 for c in centre)

    bare = tmp_path / "bare"
    make_celeba(bare, n=30, partition=False, seed=3, size=(20, 24))
    with pytest.raises(ConfigError, match=r"method_b\.styles: 'projected' .* CelebA test split under data\.root="):
        MB.held_out_targets(_celeba_ctx(bare), 0, 2)


def test_method_e_hands_its_projected_mixes_to_the_judge(monkeypatch, tmp_path):
    """Train method e at --smoke size; the images the runner evaluates are the projected-target mixes."""
    spy = Spy(MB.mix_projected_targets)
    monkeypatch.setattr(MB, "mix_projected_targets", spy)
    judged = []

    class Judged(Exception):
        pass

    def evaluate_images(images, *a, **k):
        judged.append(images)
        raise Judged

    monkeypatch.setattr(runner, "evaluate_images", evaluate_images)
    ctx = _ctx()
    with pytest.raises(Judged):
        runner.run_one(ctx, BY_KEY["e"], 0, tmp_path, None, None, "hash", {})
    n = ctx.config["eval"]["n"]
    assert len(spy.calls) == 1 and len(judged) == 1
    assert judged[0].shape == (n, 3, 16, 16) and torch.equal(judged[0], spy.calls[0]["result"].images.detach().float().cpu())
    assert spy.calls[0]["targets_a"].shape[0] == n
    assert (tmp_path / "work" / "seed0" / "e-method-b" / "mixes" / "metrics.json").is_file()
