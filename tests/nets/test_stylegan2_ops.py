"""StyleGAN2 ops against slow, plain reference implementations (explicit loops, float64)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from multifeat.nets.stylegan2 import ops
from multifeat.nets.stylegan2.discriminator import MinibatchStdLayer


def naive_upfirdn2d(x, f, up=1, down=1, padding=(0, 0, 0, 0), gain=1.0, flip_filter=False):
    """Zero insertion, pad/crop, true convolution and subsampling written out as loops."""
    x = x.double().numpy()
    f = f.double().numpy()
    if f.ndim == 1:  # separable: the same taps along both axes
        f = np.outer(f, f)
    f = f * gain
    upx, upy = (up, up) if isinstance(up, int) else up
    downx, downy = (down, down) if isinstance(down, int) else down
    px0, px1, py0, py1 = padding
    n, c, h, w = x.shape
    z = np.zeros([n, c, h * upy, w * upx])
    for i in range(h):
        for j in range(w):
            z[:, :, i * upy, j * upx] = x[:, :, i, j]
    hp, wp = h * upy + py0 + py1, w * upx + px0 + px1
    p = np.zeros([n, c, hp, wp])
    for i in range(hp):
        for j in range(wp):
            si, sj = i - py0, j - px0
            if 0 <= si < h * upy and 0 <= sj < w * upx:
                p[:, :, i, j] = z[:, :, si, sj]
    fh, fw = f.shape
    k = f if flip_filter else f[::-1, ::-1]  # correlation with the flipped filter = convolution
    out = np.zeros([n, c, hp - fh + 1, wp - fw + 1])
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            out[:, :, i, j] = (p[:, :, i : i + fh, j : j + fw] * k).sum(axis=(2, 3))
    return torch.from_numpy(out[:, :, ::downy, ::downx].copy())


CASES = [
    # filter, up, down, padding, gain, flip_filter
    ("asym2d", 1, 1, [1, 2, 0, 1], 1.0, False),
    ("sep4", 2, 1, [2, 1, 2, 1], 4.0, False),
    ("asym2d", 2, 1, [1, 0, 2, 1], 4.0, True),
    ("sep4", 1, 2, [1, 1, 1, 1], 1.0, False),
    ("asym2d", 1, 2, [0, 3, 1, 1], 1.5, True),
    ("asym2d", 2, 2, [-1, 2, 0, -1], 4.0, False),
    ("sep4", 3, 1, [1, 2, 3, 0], 9.0, False),
    ("2d4", (2, 1), (1, 2), [2, 1, 1, 1], 2.0, False),
]


@pytest.mark.parametrize("fname,up,down,padding,gain,flip", CASES)
def test_upfirdn2d_matches_naive_loops(fname, up, down, padding, gain, flip):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, generator=g)
    if fname == "asym2d":
        f = torch.rand(3, 4, generator=g)
    elif fname == "sep4":
        f = ops.setup_filter([1, 2, 5, 1], separable=True)
        assert f.ndim == 1
    else:
        f = ops.setup_filter([1, 3, 3, 1])
    got = ops.upfirdn2d(x, f, up=up, down=down, padding=padding, gain=gain, flip_filter=flip)
    ref = naive_upfirdn2d(x, f, up=up, down=down, padding=padding, gain=gain, flip_filter=flip)
    assert got.shape == ref.shape
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)


def test_setup_filter_and_resampling_shapes():
    f = ops.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4)
    assert math.isclose(float(f.sum()), 1.0, rel_tol=1e-6)
    assert math.isclose(float(f[1, 1]), 9 / 64, rel_tol=1e-6)
    x = torch.full([1, 2, 8, 8], 3.0)
    up = ops.upsample2d(x, f)
    down = ops.downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    # a constant stays constant away from the zero-padded border (the filters keep the mean)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 3.0))


def test_bias_act_hand_values():
    x = torch.tensor([-1.0, 2.0]).reshape(1, 2, 1, 1)
    b = torch.tensor([0.5, -3.0])
    s2 = math.sqrt(2)
    # x + b = [-0.5, -1]; lrelu(0.2) = [-0.1, -0.2]; * sqrt(2)
    torch.testing.assert_close(ops.bias_act(x, b, act="lrelu").flatten(), torch.tensor([-0.1 * s2, -0.2 * s2]))
    torch.testing.assert_close(
        ops.bias_act(x, b, act="lrelu", clamp=0.2).flatten(), torch.tensor([-0.1 * s2, -0.2])
    )
    torch.testing.assert_close(ops.bias_act(x, b).flatten(), torch.tensor([-0.5, -1.0]))
    torch.testing.assert_close(ops.bias_act(x, None, act="relu", gain=3.0).flatten(), torch.tensor([0.0, 6.0]))
    torch.testing.assert_close(ops.bias_act(x, b, act="lrelu", alpha=0.5, gain=1).flatten(), torch.tensor([-0.25, -0.5]))


def reference_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight):
    """The defining composition: FIR upsample (+pad), plain conv, FIR downsample."""
    fw = f.shape[-1]
    px0, px1, py0, py1 = padding
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fw + up - 1) // 2
        py1 += (fw - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fw - down + 1) // 2
        py1 += (fw - down) // 2
    x = ops.upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up**2)
    x = F.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        x = ops.upfirdn2d(x, f, down=down)
    return x


@pytest.mark.parametrize(
    "k,up,down,groups,flip_weight",
    [
        (3, 2, 1, 1, False), (3, 2, 1, 2, False), (3, 2, 1, 1, True), (1, 2, 1, 1, True),
        (3, 1, 2, 1, True), (1, 1, 2, 2, True), (3, 1, 1, 1, True), (3, 2, 2, 1, False),
    ],
)
def test_conv2d_resample_fast_paths_match_definition(k, up, down, groups, flip_weight):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    w = torch.randn(6, 4 // groups, k, k, generator=g)
    f = ops.setup_filter([1, 3, 3, 1])
    pad = [k // 2] * 4
    got = ops.conv2d_resample(x, w, f=f, up=up, down=down, padding=k // 2, groups=groups, flip_weight=flip_weight)
    ref = reference_conv2d_resample(x, w, f, up, down, pad, groups, flip_weight)
    assert got.shape == (2, 6, 8 * up // down, 8 * up // down)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def loop_modulated_conv2d(x, weight, styles, demodulate, up, padding, f, noise, flip_weight):
    outs = []
    for n in range(x.shape[0]):
        w = weight.double() * styles[n].double().reshape(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        y = ops.conv2d_resample(x[n : n + 1].double(), w, f=f.double(), up=up, padding=padding, flip_weight=flip_weight)
        if noise is not None:
            y = y + noise[n : n + 1].double()
        outs.append(y)
    return torch.cat(outs)


@pytest.mark.parametrize("up,demodulate,k", [(1, True, 3), (2, True, 3), (1, False, 1), (2, False, 3)])
def test_modulated_conv2d_fused_and_unfused_match_per_sample_loop(up, demodulate, k):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 6, 6, generator=g)
    weight = torch.randn(5, 4, k, k, generator=g)
    styles = torch.randn(3, 4, generator=g) + 1
    noise = torch.randn(3, 1, 6 * up, 6 * up, generator=g)
    f = ops.setup_filter([1, 3, 3, 1])
    flip = up == 1
    ref = loop_modulated_conv2d(x, weight, styles, demodulate, up, k // 2, f, noise, flip)
    for fused in (True, False):
        got = ops.modulated_conv2d(
            x, weight, styles, demodulate=demodulate, up=up, padding=k // 2, resample_filter=f, noise=noise,
            fused=fused,
        )
        torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=1e-4)


def test_modulated_conv2d_fp16_prescaling_keeps_result():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 5, 5, generator=g)
    weight = torch.randn(4, 8, 3, 3, generator=g) * 50
    styles = torch.randn(2, 8, generator=g) * 30
    ref = ops.modulated_conv2d(x, weight, styles, padding=1)
    got = ops.modulated_conv2d(x.half(), weight, styles, padding=1)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), ref, atol=2e-2, rtol=2e-2)


def test_minibatch_std_matches_group_loop():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 4, 3, 3, generator=g)
    layer = MinibatchStdLayer(group_size=4, num_channels=2)
    out = layer(x)
    assert out.shape == (8, 6, 3, 3)
    n_groups = 2
    for i in range(8):
        members = [j for j in range(8) if j % n_groups == i % n_groups]  # sample i is in group i % (N/G)
        grp = x[members].double()
        std = (grp.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [C, H, W]
        for fi in range(2):
            expect = std[fi * 2 : fi * 2 + 2].mean()
            torch.testing.assert_close(out[i, 4 + fi].double(), torch.full((3, 3), float(expect), dtype=torch.float64))


def test_equalized_layers_gains():
    fc = ops.FullyConnectedLayer(4, 3, lr_multiplier=0.01, bias_init=1)
    x = torch.randn(2, 4)
    ref = x @ (fc.weight * 0.01 / 2).t() + fc.bias * 0.01
    torch.testing.assert_close(fc(x), ref)
    conv = ops.Conv2dLayer(2, 3, kernel_size=3, activation="lrelu")
    xi = torch.randn(1, 2, 5, 5)
    ref = F.leaky_relu(F.conv2d(xi, conv.weight / math.sqrt(18), conv.bias, padding=1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(conv(xi), ref)
    frozen = ops.Conv2dLayer(2, 3, kernel_size=1, trainable=False)
    assert not list(frozen.parameters()) and {"weight", "bias"} <= set(frozen.state_dict())
