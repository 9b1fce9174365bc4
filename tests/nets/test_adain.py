"""AdaIN: the defining properties of Huang & Belongie's operator, checked numerically."""

import pytest
import torch

from multifeat.nets.adain import AdaIN, adain, channel_stats


def _stats(x):
    return x.mean(dim=(2, 3)), x.std(dim=(2, 3), unbiased=False)


def test_matches_plain_per_channel_loop():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(2, 3, 5, 4, generator=g) * 3 + 1
    s = torch.randn(2, 3, 6, 6, generator=g) * 0.5 - 2
    out = adain(c, s, eps=1e-5)
    ref = torch.empty_like(c)
    for n in range(2):
        for k in range(3):
            cc, ss = c[n, k].double(), s[n, k].double()
            mc, vc = cc.mean(), ((cc - cc.mean()) ** 2).mean()
            ms, vs = ss.mean(), ((ss - ss.mean()) ** 2).mean()
            ref[n, k] = ((cc - mc) / (vc + 1e-5).sqrt() * (vs + 1e-5).sqrt() + ms).float()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_output_statistics_are_the_styles():
    g = torch.Generator().manual_seed(1)
    c = torch.randn(4, 8, 16, 16, generator=g) * 2 + 0.7
    s = torch.randn(4, 8, 8, 8, generator=g) * (torch.rand(4, 8, 1, 1, generator=g) * 3 + 0.5) + torch.randn(4, 8, 1, 1, generator=g)
    out = adain(c, s)
    m_out, sd_out = _stats(out)
    m_s, sd_s = _stats(s)
    torch.testing.assert_close(m_out, m_s, rtol=0, atol=1e-5)
    torch.testing.assert_close(sd_out, sd_s, rtol=1e-4, atol=1e-5)
    # exactly, with eps: std_out = sqrt(var_s + eps) * sqrt(var_c / (var_c + eps))
    vc, vs = c.var(dim=(2, 3), unbiased=False), s.var(dim=(2, 3), unbiased=False)
    torch.testing.assert_close(sd_out, (vs + 1e-5).sqrt() * (vc / (vc + 1e-5)).sqrt(), rtol=1e-5, atol=1e-6)


def test_invariant_to_affine_change_of_content():
    g = torch.Generator().manual_seed(2)
    c = torch.randn(2, 4, 8, 8, generator=g)
    s = torch.randn(2, 4, 8, 8, generator=g) * 2 + 3
    a = torch.rand(2, 4, 1, 1, generator=g) * 5 + 0.5  # positive per-channel scale
    b = torch.randn(2, 4, 1, 1, generator=g) * 10
    torch.testing.assert_close(adain(a * c + b, s), adain(c, s), rtol=1e-4, atol=1e-4)


def test_identity_when_content_is_style():
    x = torch.randn(3, 5, 7, 7, generator=torch.Generator().manual_seed(3)) * 4 - 1
    torch.testing.assert_close(adain(x, x), x, rtol=0, atol=1e-5)


def test_constant_content_gives_style_mean_without_nan_and_finite_gradient():
    c = torch.full((2, 3, 4, 4), 0.25, requires_grad=True)
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = AdaIN()(c, s)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, s.mean(dim=(2, 3), keepdim=True).expand_as(out).detach())
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(c.grad).all() and torch.isfinite(s.grad).all()
    # constant style too: output is the style's value up to sqrt(eps) times the normalised content
    c2 = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(5))
    out2 = adain(c2, torch.full((1, 2, 3, 3), -0.5))
    norm_c2 = (c2 - c2.mean(dim=(2, 3), keepdim=True)) / c2.std(dim=(2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(out2, -0.5 + 1e-5**0.5 * norm_c2, rtol=0, atol=1e-5)


def test_gradient_is_finite_and_matches_finite_differences():
    g = torch.Generator().manual_seed(4)
    c = torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: adain(a, b).double(), (c, s))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="batch and channels"):
        adain(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, 4))
    mean, std = channel_stats(torch.zeros(1, 1, 2, 2))
    assert mean.shape == (1, 1, 1, 1) and float(std) == pytest.approx(1e-5**0.5)


def _normalised(x):
    return (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), unbiased=False, keepdim=True)


@pytest.mark.parametrize("scale", [1.0, 1e-3])  # 1e-3: the feature-map spread of a barely trained generator
def test_keeps_the_layout_of_the_content_not_the_style(scale):
    """Every output channel is the content channel up to a positive scale and a shift: the same
    normalised map, and none of the style's. The content has a different layout in every channel
    (ramps, a disc, stripes) and the style another one, so a swap of the roles would be seen."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 12), torch.linspace(-1, 1, 12), indexing="ij")
    layouts = torch.stack([xx, yy, ((xx**2 + yy**2) < 0.4).float(), torch.sin(6 * xx)])  # [4, 12, 12]
    g = torch.Generator().manual_seed(6)
    c = (layouts[None] * scale * (torch.rand(2, 4, 1, 1, generator=g) + 0.5) + torch.randn(2, 4, 1, 1, generator=g))
    s = torch.randn(2, 4, 12, 12, generator=g) * 3 + 1
    out = adain(c, s)
    n_c, n_out, n_s = _normalised(c), _normalised(out), _normalised(s)
    assert n_c.shape == (2, 4, 12, 12) and float(n_c.abs().amax(dim=(2, 3)).min()) > 0.5  # 8 real layouts compared
    torch.testing.assert_close(n_out, n_c, rtol=0, atol=2e-3 if scale < 1 else 1e-4)
    per_channel_gap = (n_out - n_s).abs().mean(dim=(2, 3))
    assert float(per_channel_gap.min()) > 0.3  # no channel took the style's layout
    # and the statistics are the style's (up to eps, which matters when the content barely varies)
    vc, vs = c.var(dim=(2, 3), unbiased=False), s.var(dim=(2, 3), unbiased=False)
    torch.testing.assert_close(out.mean(dim=(2, 3)), s.mean(dim=(2, 3)), rtol=0, atol=1e-4)
    torch.testing.assert_close(out.var(dim=(2, 3), unbiased=False), (vs + 1e-5) * vc / (vc + 1e-5), rtol=1e-3, atol=1e-6)
