"""The judge's geometric views (zoomed, moved and turned faces that keep their labels), the interval of
its balanced accuracy, and the CelebA judge config that uses the views."""

import math
from pathlib import Path

import pytest
import torch

from multifeat.errors import ConfigError
from multifeat.eval import judge_data as jd
from multifeat.eval.evaluator import AttributeEvaluator
from multifeat.eval.judge_data import balanced_accuracy, balanced_accuracy_interval, geometric_views, mirrored

S = 16
CENTRES = (torch.arange(S, dtype=torch.float64) * 2 + 1) / S - 1  # pixel centres in normalised coordinates


def _ramps(n: int) -> torch.Tensor:
    """``[n,3,S,S]``: channel 0 = 0.5 x, channel 1 = 0.5 y (pixel centres), channel 2 = 0.3 x y + 0.1 * image index."""
    y, x = torch.meshgrid(CENTRES, CENTRES, indexing="ij")
    img = torch.stack([0.5 * x, 0.5 * y, 0.3 * x * y]).float()
    return img[None].repeat(n, 1, 1, 1) + torch.tensor([0.0, 0.0, 0.1])[None, :, None, None] * torch.arange(n)[:, None, None, None]


def test_pure_zoom_and_shift_move_a_ramp_as_worked_out_by_hand():
    """Bilinear resampling is exact on a linear ramp: output pixel p shows input point (p - t) / zoom."""
    n, shift = 6, 0.1
    x = _ramps(n)
    out = geometric_views(x, prob=1.0, scale=(0.8, 1.25), shift=shift, rotate=0.0, generator=torch.Generator().manual_seed(4))
    d = torch.rand(n, 6, generator=torch.Generator().manual_seed(4)).double()  # the same draws: apply, zoom, dx, dy, ...
    zoom = torch.exp(math.log(0.8) + (math.log(1.25) - math.log(0.8)) * d[:, 1])
    assert zoom.min() < 0.95 and zoom.max() > 1.05  # both zooming in and out are exercised
    checked = 0
    for i in range(n):
        tx, ty = ((2 * d[i, 2:4] - 1) * shift * 2).tolist()  # the frame's centre moves to (tx, ty)
        qx, qy = (CENTRES - tx) / zoom[i], (CENTRES - ty) / zoom[i]
        inside_x = (qx >= CENTRES[0]) & (qx <= CENTRES[-1])
        inside_y = (qy >= CENTRES[0]) & (qy <= CENTRES[-1])
        want_x = (0.5 * qx)[None, :].expand(S, S)
        want_y = (0.5 * qy)[:, None].expand(S, S)
        m = inside_y[:, None] & inside_x[None, :]
        torch.testing.assert_close(out[i, 0][m].double(), want_x[m], atol=1e-5, rtol=0)
        torch.testing.assert_close(out[i, 1][m].double(), want_y[m], atol=1e-5, rtol=0)
        checked += int(m.sum())
    assert checked > n * S * S // 2


def test_rotation_turns_the_frame_about_its_centre():
    x = _ramps(1)
    out = geometric_views(x, prob=1.0, scale=(1.0, 1.0), shift=0.0, rotate=30.0, generator=torch.Generator().manual_seed(1))
    d = torch.rand(1, 6, generator=torch.Generator().manual_seed(1)).double()
    a = (2 * d[0, 4] - 1) * math.radians(30.0)
    assert abs(a) > math.radians(3)
    # output point p shows the input at R(a) p: its x is cos(a) px - sin(a) py
    py, px = torch.meshgrid(CENTRES, CENTRES, indexing="ij")
    qx = math.cos(a) * px - math.sin(a) * py
    qy = math.sin(a) * px + math.cos(a) * py
    m = (qx.abs() <= CENTRES[-1]) & (qy.abs() <= CENTRES[-1])
    torch.testing.assert_close(out[0, 0][m].double(), 0.5 * qx[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0, 1][m].double(), 0.5 * qy[m], atol=1e-5, rtol=0)


def test_views_keep_the_shape_differ_from_the_input_and_follow_the_seed():
    x = torch.rand(8, 3, S, S) * 2 - 1
    a = geometric_views(x, generator=torch.Generator().manual_seed(0))
    b = geometric_views(x, generator=torch.Generator().manual_seed(0))
    c = geometric_views(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert all(not torch.allclose(a[i], x[i], atol=1e-3) for i in range(8))
    assert a.min() >= -1 and a.max() <= 1
    # with probability 0.5 the images whose first draw is below 0.5 change, the others are returned as they are
    half = geometric_views(x, prob=0.5, generator=torch.Generator().manual_seed(2))
    picked = torch.rand(8, 6, generator=torch.Generator().manual_seed(2))[:, 0] < 0.5
    assert 0 < int(picked.sum()) < 8
    for i in range(8):
        assert torch.equal(half[i], x[i]) != bool(picked[i]), i


def test_probability_zero_draws_nothing_and_bad_settings_are_refused():
    x = torch.rand(4, 3, S, S) * 2 - 1
    torch.manual_seed(5)
    before = torch.get_rng_state()
    assert torch.equal(geometric_views(x, prob=0.0), x)
    assert torch.equal(torch.get_rng_state(), before)
    for kwargs, word in [({"prob": 1.5}, "geometric"), ({"scale": (1.2, 0.9)}, "geometric_scale"),
                         ({"scale": (0.8,)}, "geometric_scale"), ({"shift": 0.3}, "geometric_shift"),
                         ({"rotate": -1.0}, "geometric_rotate")]:
        with pytest.raises(ConfigError, match=word):
            geometric_views(x, **kwargs)
    with pytest.raises(ConfigError, match="geometric_shift"):
        AttributeEvaluator(image_size=16, width=4, max_width=8, geometric=0.5, geometric_shift=0.5)


def test_evaluator_views_are_off_by_default_and_keep_the_labels_when_on(monkeypatch):
    import multifeat.eval.evaluator as E

    seen = []

    def spy(images, *args):
        seen.append((images.clone(), args))
        return images.flip(-1)

    monkeypatch.setattr(E.jd, "geometric_views", spy)
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "attrs": torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]])}
    off = AttributeEvaluator(image_size=16, attributes=("bald", "beard"), width=4, max_width=8, robust=False)
    monkeypatch.setattr(off, "log", lambda *a, **k: None)
    off.training_step(batch, 0)
    assert seen == [] and off.geometric[0] == 0.0
    assert not any(k.startswith("geometric") or k == "lr_cosine" for k in off.hparams)
    assert "geometric" not in off.checkpoint_metadata()["recipe"]

    torch.manual_seed(0)
    on = AttributeEvaluator(image_size=16, attributes=("bald", "beard"), width=4, max_width=8, robust=False, geometric=0.5,
                            geometric_scale=[0.9, 1.1], geometric_shift=0.05, geometric_rotate=5)
    monkeypatch.setattr(on, "log", lambda *a, **k: None)
    loss = on.training_step(batch, 0)
    assert len(seen) == 1 and torch.equal(seen[0][0], batch["image"]) and seen[0][1] == (0.5, (0.9, 1.1), 0.05, 5.0)
    # the loss is taken on the views with the batch's own labels
    expected = torch.nn.functional.binary_cross_entropy_with_logits(on(batch["image"].flip(-1)), batch["attrs"])
    torch.testing.assert_close(loss, expected)
    assert on.hparams["geometric"] == 0.5 and on.hparams["geometric_scale"] == [0.9, 1.1]
    assert on.checkpoint_metadata()["recipe"]["geometric"] == [0.5, [0.9, 1.1], 0.05, 5.0]


def test_the_shipped_judge_records_no_new_setting():
    """The shipped SyntheticFaces file's hyper-parameters are exactly those a default evaluator records
    today: the views and the cosine are off by default, so a rebuilt file carries the same settings."""
    from multifeat.eval.shipped import shipped_sizes

    files = shipped_sizes()
    assert files
    for path in files.values():
        hp = torch.load(path, map_location="cpu", weights_only=False)["hyper_parameters"]
        fresh = AttributeEvaluator(**hp)
        assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(fresh.hparams).items()} == hp
        assert fresh.geometric[0] == 0.0


def test_cosine_learning_rate_needs_max_steps_and_ends_at_a_twentieth():
    from lightning import Trainer

    m = AttributeEvaluator(image_size=16, attributes=("bald", "beard"), width=4, max_width=8, lr=0.01, robust=False, lr_cosine=True)
    m.trainer = Trainer(max_steps=8, logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    cfg = m.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    assert cfg["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(8):
        opt.step()
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
    # CosineAnnealingLR: lr_k = lr_min + (lr - lr_min) (1 + cos(pi k / 8)) / 2, lr_min = lr / 20
    assert rates == pytest.approx([0.0005 + 0.0095 * (1 + math.cos(math.pi * k / 8)) / 2 for k in range(1, 9)])
    m2 = AttributeEvaluator(image_size=16, attributes=("bald", "beard"), width=4, max_width=8, robust=False, lr_cosine=True)
    m2.trainer = Trainer(max_epochs=1, logger=False, enable_progress_bar=False, accelerator="cpu")
    with pytest.raises(ConfigError, match="max_steps"):
        m2.configure_optimizers()


def test_balanced_accuracy_interval_by_hand():
    # column 0: 8 of 8 positives found, 10 of 12 negatives rejected; column 1: 0 of 2 positives, all 18 negatives
    probs = torch.tensor([[0.9, 0.1]] * 8 + [[0.7, 0.2]] * 2 + [[0.1, 0.3]] * 10)
    targets = torch.tensor([[1.0, 0.0]] * 8 + [[0.0, 1.0]] * 2 + [[0.0, 0.0]] * 10)
    z = 2.241402727604947  # the normal quantile at 1 - 0.05 / 4 (each recall at 97.5 %)

    def wilson(k, n):
        p = k / n
        c, h = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (c - h) / (1 + z * z / n), (c + h) / (1 + z * z / n)

    # a recall of 1 has the lower Wilson bound n / (n + z^2) and the upper bound 1; a recall of 0: 0 and z^2 / (n + z^2)
    tn_lo, tn_hi = wilson(10, 12)
    want0 = ((8 / (8 + z * z) + tn_lo) / 2, (1 + tn_hi) / 2)
    want1 = ((0 + 18 / (18 + z * z)) / 2, (z * z / (2 + z * z) + 1) / 2)
    got = balanced_accuracy_interval(probs, targets)
    assert got[0] == pytest.approx(want0) and got[1] == pytest.approx(want1)
    bacc = balanced_accuracy(probs, targets)
    assert bacc == pytest.approx([(1 + 10 / 12) / 2, 0.5])
    assert all(lo < b < hi for (lo, hi), b in zip(got, bacc))
    assert all(math.isnan(v) for v in balanced_accuracy_interval(probs, torch.ones(20, 2))[0])
    with pytest.raises(ConfigError, match="level"):
        balanced_accuracy_interval(probs, targets, level=1.0)


def test_celeba_judge_config_turns_the_views_on_and_the_synthetic_one_does_not(repo_root):
    import yaml

    cpu = yaml.safe_load((Path(repo_root) / "experiments" / "celeba_cpu" / "evaluator.yaml").read_text())["model"]["init_args"]
    assert cpu["geometric"] > 0 and cpu["lr_cosine"] is True
    lo, hi = cpu["geometric_scale"]
    # the test framings lie outside the trained ranges: zoom x4/3 and x3/4, a move of 1/8 of the side on both axes
    assert 0.75 < lo and hi < 4 / 3 and cpu["geometric_shift"] < 1 / 8
    jd.check_geometric(cpu["geometric"], cpu["geometric_scale"], cpu["geometric_shift"], cpu["geometric_rotate"])
    synth = yaml.safe_load((Path(repo_root) / "experiments" / "evaluator.yaml").read_text())["model"]["init_args"]
    assert not synth.get("geometric") and not synth.get("lr_cosine")


def test_celeba_judge_config_fits_at_tiny_size_with_the_views(tmp_path, repo_root):
    import sys

    from multifeat.cli import main as cli_main

    sys.path.insert(0, str(Path(repo_root) / "tests" / "data"))
    from celeba_fixtures import make_celeba

    make_celeba(tmp_path / "data", n=48, size=(16, 20))
    out = tmp_path / "run"
    rc = cli_main(["fit", "--config", str(Path(repo_root) / "experiments" / "celeba_cpu" / "evaluator.yaml"),
                   "--data.init_args.root", str(tmp_path / "data"), "--data.init_args.image_size", "16",
                   "--data.init_args.batch_size", "8", "--model.init_args.image_size", "16",
                   "--model.init_args.width", "4", "--model.init_args.max_width", "8",
                   "--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.default_root_dir", str(out),
                   "--trainer.logger.init_args.save_dir", str(out), "--trainer.callbacks.init_args.dirpath", str(out / "checkpoints"),
                   "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
    assert rc == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
    hp = ckpt["hyper_parameters"]
    assert hp["geometric"] == 0.5 and hp["geometric_scale"] == [0.8, 1.25] and hp["lr_cosine"] is True
    assert ckpt["multifeat"]["recipe"]["geometric"] == [0.5, [0.8, 1.25], 0.1, 10.0]
    sched = ckpt["lr_schedulers"][0]
    assert sched["T_max"] == 3 and sched["last_epoch"] == 3 and sched["_last_lr"][0] == pytest.approx(0.002 / 20)


def test_mirrored_flips_exactly_the_drawn_faces():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    x = torch.cat([x] * 50)  # 100 images
    out = mirrored(x, 0.5, generator=torch.Generator().manual_seed(3))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    # every image is either itself or its left-right mirror (column j becomes column 3 - j)
    assert bool((flipped | kept).all()) and torch.equal(out[flipped][..., 0], x[flipped][..., 3])
    assert 30 <= int(flipped.sum()) <= 70
    # the draws are those of the generator, in order: the same seed flips the same images
    draws = torch.rand(100, generator=torch.Generator().manual_seed(3)) < 0.5
    assert torch.equal(flipped, draws)
    assert torch.equal(mirrored(x, 0.0), x) and torch.equal(mirrored(x, 1.0), x.flip(-1))


def test_evaluator_mirror_is_off_by_default_and_keeps_the_labels_when_on(monkeypatch):
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "attrs": torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]])}
    off = AttributeEvaluator(image_size=16, attributes=("bald", "beard"), width=4, max_width=8, robust=False)
    assert "hflip" not in off.hparams and "hflip" not in off.checkpoint_metadata()["recipe"]
    # off: no draw is taken from the global stream, so a recipe without it trains as before
    torch.manual_seed(5)
    monkeypatch.setattr(off, "log", lambda *a, **k: None)
    off.training_step(batch, 0)
    after_off = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), after_off)

    on = AttributeEvaluator(image_size=16, attributes=("bald", "beard"), width=4, max_width=8, robust=False, hflip=1.0)
    monkeypatch.setattr(on, "log", lambda *a, **k: None)
    loss = on.training_step(batch, 0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(on(batch["image"].flip(-1)), batch["attrs"])
    torch.testing.assert_close(loss, expected)
    assert on.hparams["hflip"] == 1.0 and on.checkpoint_metadata()["recipe"]["hflip"] == 1.0
    with pytest.raises(ConfigError, match="hflip"):
        AttributeEvaluator(image_size=16, width=4, max_width=8, hflip=1.5)
