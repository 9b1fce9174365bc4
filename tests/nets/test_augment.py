"""ADA augmentation pipeline and the adaptive-p controller, against plain references."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from multifeat.errors import ConfigError
from multifeat.nets.stylegan2.augment import (
    AUGPIPE_SPECS,
    AdaptiveP,
    AugmentParams,
    AugmentPipe,
    ada_adjust,
    augment_pipe_from_preset,
    geometric_matrix,
)

B, H, W = 16, 16, 16


def _images(b=B, c=3, h=H, w=W, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _gen(seed=1):
    return torch.Generator().manual_seed(seed)


def _pipe(**kw):
    return AugmentPipe(**kw, p=1.0)


# -- identity and determinism ---------------------------------------------------------------------


def test_p_zero_is_bit_identical():
    x = _images()
    pipe = augment_pipe_from_preset("bgc", p=0.0)
    assert torch.equal(pipe(x, _gen()), x)
    # all multipliers zero: identity even at p = 1
    assert torch.equal(AugmentPipe(p=1.0)(x, _gen()), x)


def test_seeded_generator_is_deterministic_and_seed_dependent():
    x = _images()
    pipe = augment_pipe_from_preset("bgc", p=0.8)
    a, b, c = pipe(x, _gen(5)), pipe(x, _gen(5)), pipe(x, _gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_presets_match_groups_and_unknown_raises():
    pipe = augment_pipe_from_preset("bgc")
    on = {
        k
        for k in (
            "xflip",
            "rotate90",
            "xint",
            "scale",
            "rotate",
            "aniso",
            "xfrac",
            "brightness",
            "contrast",
            "lumaflip",
            "hue",
            "saturation",
            "noise",
            "cutout",
        )
        if getattr(pipe, k) > 0
    }
    assert on == {
        "xflip",
        "rotate90",
        "xint",
        "scale",
        "rotate",
        "aniso",
        "xfrac",
        "brightness",
        "contrast",
        "lumaflip",
        "hue",
        "saturation",
    }
    assert set(AUGPIPE_SPECS["bg"]) == {"xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac"}
    assert set(AUGPIPE_SPECS["gc"]) == {
        "scale",
        "rotate",
        "aniso",
        "xfrac",
        "brightness",
        "contrast",
        "lumaflip",
        "hue",
        "saturation",
    }
    assert (pipe.scale_std, pipe.rotate_max, pipe.aniso_std, pipe.xfrac_std) == (0.2, 1.0, 0.2, 0.125)
    assert (pipe.brightness_std, pipe.contrast_std, pipe.hue_max, pipe.saturation_std) == (0.2, 0.5, 1.0, 1.0)
    assert pipe.p.ndim == 0 and "p" in dict(pipe.named_buffers())
    with pytest.raises(ConfigError, match="bgx"):
        augment_pipe_from_preset("bgx")
    with pytest.raises(ConfigError, match="scale"):
        AugmentPipe(scale=-1)


# -- pixel blitting: exact against torch references -----------------------------------------------


def test_xflip_is_torch_flip_or_identity_per_image():
    x = _images()
    y = _pipe(xflip=1)(x, _gen())
    flipped = [torch.equal(y[i], torch.flip(x[i], [2])) for i in range(B)]
    same = [torch.equal(y[i], x[i]) for i in range(B)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 0 < sum(flipped) < B  # at p = 1 the flip itself is a coin toss, independently per image


def test_rotate90_is_torch_rot90():
    x = _images()
    y = _pipe(rotate90=1)(x, _gen())
    ks = []
    for i in range(B):
        match = [k for k in range(4) if torch.equal(y[i], torch.rot90(x[i], k, dims=(1, 2)))]
        assert len(match) == 1, f"image {i} is no 90-degree rotation of its input"
        ks.append(match[0])
    assert len(set(ks)) >= 3


def _reflect_shift(img, dx, dy):
    """Content moved by (dx, dy) pixels, borders filled by reflection (plain reference)."""
    m = max(abs(dx), abs(dy))
    pad = F.pad(img[None], [m, m, m, m], mode="reflect")[0]
    return pad[:, m - dy : m - dy + img.shape[1], m - dx : m - dx + img.shape[2]]


def test_integer_translation_shifts_content_with_reflection():
    x = _images(w=32, h=24)
    pipe = _pipe(xint=1)
    y = pipe(x, _gen())
    prm = pipe.sample_params(B, 24, 32, generator=_gen())  # the same draw
    shifts = [(int(prm.xint[i, 0]), int(prm.xint[i, 1])) for i in range(B)]
    for i, (dx, dy) in enumerate(shifts):
        assert abs(dx) <= 4 and abs(dy) <= 3  # at most 1/8 of the size
        assert torch.equal(y[i], _reflect_shift(x[i], dx, dy))
    assert sum(s != (0, 0) for s in shifts) >= B // 2
    assert len(set(shifts)) >= 4


def test_blit_combination_is_exact_gather():
    """Flip + quarter turn + shift applied together equal the composition of the torch references."""
    x = _images(b=1, h=12, w=12)
    prm = dataclasses.replace(
        AugmentParams.identity(1),
        xflip=torch.tensor([1.0]),
        rotate90=torch.tensor([1.0]),
        xint=torch.tensor([[2.0, -1.0]]),
    )
    y = AugmentPipe.apply(x, prm)
    # forward order: flip, then a quarter turn (either sense), then translate
    flipped = torch.flip(x[0], [2])
    refs = [_reflect_shift(torch.rot90(flipped, k, dims=(1, 2)), 2, -1) for k in (1, 3)]
    assert sum(torch.equal(y[0], r) for r in refs) == 1


# -- general geometry: against an analytic smooth image ------------------------------------------


def _blob(xx, yy):
    return torch.exp(-((xx - 2.0) ** 2 / 40 + (yy + 1.5) ** 2 / 25)) * 1.6 - 0.8


def _geom_check(size=24, **fields):
    yy, xx = torch.meshgrid(
        torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing="ij"
    )
    img = _blob(xx, yy)[None, None].repeat(1, 3, 1, 1)
    prm = dataclasses.replace(AugmentParams.identity(1), **{k: torch.tensor(v) for k, v in fields.items()})
    out = AugmentPipe.apply(img, prm)[0, 0]
    # plain reference: the analytic image at the transformed coordinates, composed by hand
    x, y = xx.double(), yy.double()
    if "xfrac" in fields:
        x, y = x - fields["xfrac"][0][0], y - fields["xfrac"][0][1]
    if "rotate_post" in fields:
        t = fields["rotate_post"][0]
        x, y = math.cos(t) * x - math.sin(t) * y, math.sin(t) * x + math.cos(t) * y
    if "aniso" in fields:
        s = fields["aniso"][0]
        x, y = x / s, y * s
    if "rotate_pre" in fields:
        t = fields["rotate_pre"][0]
        x, y = math.cos(t) * x - math.sin(t) * y, math.sin(t) * x + math.cos(t) * y
    if "scale" in fields:
        x, y = x / fields["scale"][0], y / fields["scale"][0]
    ref = _blob(x, y).float()
    inside = (x.abs() < size / 2 - 3) & (y.abs() < size / 2 - 3)
    return (out - ref)[inside].abs().max().item(), out


@pytest.mark.parametrize(
    "fields",
    [
        dict(scale=[1.35]),
        dict(scale=[0.8]),
        dict(rotate_pre=[0.6]),
        dict(rotate_post=[-2.2]),
        dict(aniso=[1.3]),
        dict(xfrac=[[0.5, -1.25]]),
        dict(scale=[1.1], rotate_pre=[0.3], aniso=[0.8], rotate_post=[1.0], xfrac=[[1.5, 0.25]]),
    ],
)
def test_general_geometry_matches_analytic_reference(fields):
    err, _ = _geom_check(**fields)
    assert err < 0.03, err


def test_geometric_matrix_composes_in_order():
    prm = dataclasses.replace(
        AugmentParams.identity(1), scale=torch.tensor([2.0]), xfrac=torch.tensor([[3.0, 0.0]])
    )
    g = geometric_matrix(prm, 8, 8)[0]
    # forward: scale by 2 then move 3 px right => output (x, y) samples input ((x - 3) / 2, y / 2)
    assert torch.allclose(
        g @ torch.tensor([5.0, 4.0, 1.0], dtype=torch.float64),
        torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64),
    )


# -- colour: against closed forms -----------------------------------------------------------------


def test_brightness_adds_constant_per_image():
    x = _images()
    y = _pipe(brightness=1)(x, _gen())
    d = (y - x).flatten(1)
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-6)
    assert 0.05 < d[:, 0].std() < 0.5  # N(0, 0.2)


def test_contrast_scales_about_zero():
    x = _images()
    y = _pipe(contrast=1)(x, _gen())
    c = (y * x).sum(dim=(1, 2, 3)) / (x * x).sum(dim=(1, 2, 3))  # least-squares factor per image
    assert torch.allclose(y, x * c[:, None, None, None], atol=1e-5)
    assert (c > 0).all() and not torch.allclose(c, torch.ones(B))


def test_lumaflip_reflects_about_luma_axis():
    x = _images()
    y = _pipe(lumaflip=1)(x, _gen())
    flipped = x - 2 * x.mean(dim=1, keepdim=True)  # Householder reflection: negate the grey component
    ok = [torch.allclose(y[i], flipped[i], atol=1e-6) or torch.equal(y[i], x[i]) for i in range(B)]
    assert all(ok)
    assert any(not torch.equal(y[i], x[i]) for i in range(B))


def test_hue_rotation_matches_rodrigues():
    x = _images(b=2)
    theta = torch.tensor([0.9, -2.5])
    prm = dataclasses.replace(AugmentParams.identity(2), hue=theta)
    y = AugmentPipe.apply(x, prm)
    v = torch.ones(3) / math.sqrt(3)
    for i in range(2):
        p = x[i].reshape(3, -1)
        par = v[:, None] * (v @ p)[None]
        perp = p - par
        cross = torch.linalg.cross(v[:, None].expand_as(p), p, dim=0)
        ref = par + math.cos(theta[i]) * perp + math.sin(theta[i]) * cross
        assert torch.allclose(y[i].reshape(3, -1), ref, atol=1e-5)


def test_saturation_scales_chroma():
    x = _images()
    y = _pipe(saturation=1)(x, _gen())
    m = x.mean(dim=1, keepdim=True)
    assert torch.allclose(y.mean(dim=1, keepdim=True), m, atol=1e-5)
    s = (y - m).flatten(1).norm(dim=1) / (x - m).flatten(1).norm(dim=1)
    assert torch.allclose(y - m, (x - m) * s[:, None, None, None], atol=1e-5)


def test_grey_images_get_colour_transforms_averaged():
    x = _images(c=1)
    prm = dataclasses.replace(
        AugmentParams.identity(B),
        brightness=torch.full((B,), 0.3),
        contrast=torch.full((B,), 2.0),
        hue=torch.full((B,), 1.0),
    )
    y = AugmentPipe.apply(x, prm)
    assert torch.allclose(y, x * 2 + 0.6, atol=1e-5)  # contrast after brightness; hue ignored for grey


def test_noise_and_cutout():
    x = torch.ones(B, 3, H, W)
    y = _pipe(cutout=1)(x, _gen())
    zeros = (y == 0).float().mean(dim=(1, 2, 3))
    assert ((zeros >= 0.0625) & (zeros <= 0.25)).all()  # a half-side square, clipped at the border
    z = _pipe(noise=1)(x, _gen())
    assert z.isfinite().all() and (z - x).abs().amax() > 0


# -- probabilities, independence, gradients -------------------------------------------------------


def test_probability_p_per_image_and_rotation_split():
    n = 4000
    pipe = AugmentPipe(brightness=1, rotate=1, scale=1, p=0.3)
    prm = pipe.sample_params(n, 8, 8, generator=_gen())
    fired = (prm.brightness != 0).float().mean().item()
    assert abs(fired - 0.3) < 0.03
    # two rotations, each with 1 - sqrt(1 - p): at least one fires with probability p
    p_rot = 1 - math.sqrt(1 - 0.3)
    assert abs((prm.rotate_pre != 0).float().mean().item() - p_rot) < 0.025
    any_rot = ((prm.rotate_pre != 0) | (prm.rotate_post != 0)).float().mean().item()
    assert abs(any_rot - 0.3) < 0.03
    assert prm.rotate_pre.abs().max() <= math.pi
    # log-normal scale: log2(s) ~ N(0, 0.2)
    ls = torch.log2(prm.scale[prm.scale != 1])
    assert abs(ls.std().item() - 0.2) < 0.02 and abs(ls.mean().item()) < 0.03
    # independence: brightness and scale firing are uncorrelated
    a, b = (prm.brightness != 0).float(), (prm.scale != 1).float()
    assert abs((a * b).mean().item() - a.mean().item() * b.mean().item()) < 0.02


def test_images_are_augmented_independently():
    x = _images(b=1).repeat(B, 1, 1, 1)
    y = augment_pipe_from_preset("bgc", p=1.0)(x, _gen())
    distinct = {tuple(y[i].flatten()[:64].tolist()) for i in range(B)}
    assert len(distinct) == B


def test_differentiable_and_finite():
    x = _images().requires_grad_(True)
    pipe = augment_pipe_from_preset("bgc", p=1.0)
    y = pipe(x, _gen())
    assert y.isfinite().all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.isfinite().all()
    assert (x.grad.flatten(1).abs().sum(dim=1) > 0).all()  # every image passes gradient


def test_resampled_identity_like_transform_stays_close():
    """A negligible scale goes through the resampling path and barely changes a smooth image."""
    err, out = _geom_check(scale=[1.0001])
    assert err < 0.03


# -- ADA controller -------------------------------------------------------------------------------


def test_ada_rule_is_the_official_formula_worked_by_hand():
    # official: p <- max(0, p + sign(r_t - target) * batch_size * ada_interval / (ada_kimg * 1000))
    assert ada_adjust(0.0, 0.9, 64) == pytest.approx(64 * 4 / 500_000)  # 0.000512
    assert ada_adjust(0.5, 0.1, 64) == pytest.approx(0.5 - 0.000512)
    assert ada_adjust(0.0002, 0.1, 64) == 0.0  # lower clamp only
    assert ada_adjust(0.9999, 1.0, 64, interval=4, target=0.6, ada_kimg=0.1) == pytest.approx(0.9999 + 2.56)  # no upper clamp
    assert ada_adjust(0.3, 0.6, 256) == 0.3  # exactly on target: sign 0
    assert ada_adjust(0.0, 0.7, 32, interval=2, target=0.6, ada_kimg=100) == pytest.approx(32 * 2 / 100_000)


def test_adaptive_p_follows_the_rule_on_scripted_outputs():
    pipe = AugmentPipe(xflip=1)
    ada = AdaptiveP(pipe, target=0.6, interval=4, ada_kimg=0.05)  # step = 8 * 4 / 50 = 0.64
    step = 8 * 4 / 50
    plus, minus = torch.ones(8, 1), -torch.ones(8, 1)
    mixed = torch.tensor([1.0] * 5 + [-1.0] * 2 + [0.0])  # signs sum 3 over 8 logits (sign(0) = 0)
    expected_p = [step, 2 * step, step, 2 * step]
    expected_rt = [1.0, 1.0, -1.0, (3 + 24) / 32]
    batches = [[plus] * 4, [plus] * 4, [minus] * 4, [mixed, plus, plus, plus]]
    for logits_of_interval, p, rt in zip(batches, expected_p, expected_rt):
        for logits in logits_of_interval:
            ada.accumulate(logits)
        assert ada.adjust(batch_size=8) == pytest.approx(rt)
        assert ada.p == pytest.approx(p) and float(pipe.p) == pytest.approx(p)
        assert float(ada.stats.abs().sum()) == 0  # cleared
    assert ada.last_rt == pytest.approx(27 / 32)
    assert ada.adjust(8) is None  # nothing accumulated: nothing to decide
    # extra passes over reals in an interval (e.g. the R1 pass) only add to the statistics; the step
    # size stays batch * interval
    pipe.p.fill_(0.0)
    for logits in [plus] * 5:
        ada.accumulate(logits)
    ada.adjust(batch_size=8)
    assert ada.p == pytest.approx(step)

    down = AdaptiveP(None, interval=2, ada_kimg=0.01)  # no pipe: statistics only
    down.accumulate(-torch.ones(4))
    assert down.adjust(4) == -1.0 and down.p == 0.0


def test_adaptive_p_reduces_across_processes_fixed_target_and_state():
    calls = []

    def fake_all_reduce(t):  # another process saw only negative logits
        calls.append(t.clone())
        t.add_(torch.tensor([-4.0, 4.0], dtype=torch.float64))

    pipe = AugmentPipe(xflip=1, p=0.5)
    ada = AdaptiveP(pipe, interval=1, ada_kimg=0.1, reduce_fn=fake_all_reduce)
    ada.accumulate(torch.tensor([1.0, 1.0, 1.0, -1.0]))
    assert ada.adjust(8) == pytest.approx((2 - 4) / 8)  # r_t of the summed statistics
    assert calls[0].tolist() == [2.0, 4.0]
    assert ada.p == pytest.approx(0.5 - 8 / 100)

    fixed = AdaptiveP(AugmentPipe(p=0.25), target=None, interval=1)
    for _ in range(3):
        fixed.accumulate(torch.ones(4))
        assert fixed.adjust(4) == 1.0
    assert fixed.p == 0.25

    # the statistics are a buffer (saved with the owner); the pipe is not a sub-module
    owner = torch.nn.Module()
    owner.pipe = AugmentPipe(xflip=1)
    owner.ada = AdaptiveP(owner.pipe)
    owner.ada.accumulate(torch.tensor([1.0, -1.0, 1.0]))
    assert sorted(owner.state_dict()) == ["ada.stats", "pipe.p"]
    other = torch.nn.Module()
    other.pipe = AugmentPipe(xflip=1)
    other.ada = AdaptiveP(other.pipe)
    other.load_state_dict(owner.state_dict())
    assert other.ada.stats.tolist() == [1.0, 3.0]
    with pytest.raises(ConfigError, match="interval"):
        AdaptiveP(None, interval=0)
    with pytest.raises(ConfigError, match="ada_kimg"):
        AdaptiveP(None, ada_kimg=0)
