import pytest
import torch
import torch.nn.functional as F

from multifeat.errors import ConfigError
from multifeat.nets.classifier import ConvClassifier
from multifeat.nets.dcgan import DCGANDiscriminator, DCGANGenerator


@pytest.mark.parametrize("size", [16, 32, 64, 128, 256])
def test_shapes_for_every_supported_size(size):
    g = DCGANGenerator(z_dim=16, image_size=size, width=4, max_width=32)
    d = DCGANDiscriminator(image_size=size, width=4, max_width=32)
    c = ConvClassifier(image_size=size, num_outputs=3, width=4, max_width=16)
    x = g(torch.randn(2, 16))
    assert x.shape == (2, 3, size, size)
    assert not torch.allclose(x[0], x[1], atol=1e-4)  # the noise reaches the image
    assert d(x).shape == (2,)
    assert c(x).shape == (2, 3)
    assert c.features(x).shape == (2, c.feature_dim)


@pytest.mark.parametrize("bad", [0, -32, 48, 8, 512, 32.0])
def test_bad_image_size_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="power of two"):
        DCGANGenerator(image_size=bad)


def test_hook_sees_every_resolution_and_can_change_the_output():
    g = DCGANGenerator(z_dim=8, image_size=32, width=4).eval()
    seen = []

    def hook(res, h):
        seen.append((res, h.shape[1], h.shape[-1]))
        return h

    z = torch.randn(3, 8)
    out = g(z, hook=hook)
    assert [s[0] for s in seen] == [4, 8, 16, 32]
    assert all(res == side and g.channels[res] == c for res, c, side in seen)
    torch.testing.assert_close(out, g(z))
    assert not torch.allclose(g(z, hook=lambda r, h: h * 0 if r == 8 else h), out)


@pytest.mark.parametrize("size", [16, 64])
def test_nearest_upsampling_is_nearest_then_a_3x3_convolution(size):
    """Each nearest stage against F.interpolate + F.conv2d with the stage's own weights."""
    torch.manual_seed(0)
    g = DCGANGenerator(z_dim=8, image_size=size, width=4, max_width=16, norm="none", upsample="nearest").eval()
    seen = {}
    z = torch.randn(2, 8)
    g(z, hook=lambda r, h: seen.setdefault(r, h))
    for res, stage in zip(g.resolutions[1:], g.ups):
        conv = stage[1]
        ref = F.relu(F.conv2d(F.interpolate(seen[res // 2], scale_factor=2, mode="nearest"), conv.weight, conv.bias, padding=1))
        torch.testing.assert_close(seen[res], ref)
        assert seen[res].shape[-1] == res and ref.abs().sum() > 0


def test_nearest_upsampling_draws_no_checkerboard_where_transpose_does():
    """A constant map through one stage: the transposed convolution's uneven overlap gives a pattern of
    period 2 (the checkerboard); nearest + 3x3 keeps the interior constant."""
    torch.manual_seed(0)
    x = torch.ones(1, 8, 6, 6)
    for kind, checker in (("transpose", True), ("nearest", False)):
        g = DCGANGenerator(z_dim=8, image_size=16, width=8, max_width=8, norm="none", upsample=kind)
        conv = g.ups[0][0] if kind == "transpose" else g.ups[0][1]
        torch.nn.init.normal_(conv.weight)
        with torch.no_grad():
            inner = g.ups[0][:-1](x)[..., 2:-2, 2:-2]  # away from the zero-padded border
        even_odd = (inner[..., 0::2, 0::2] - inner[..., 1::2, 1::2]).abs().amax()
        assert (float(even_odd) > 0.1) == checker, (kind, float(even_odd))
        spread = inner.amax(dim=(-2, -1)) - inner.amin(dim=(-2, -1))
        assert (float(spread.amax()) < 1e-5) == (not checker), (kind, float(spread.amax()))


@pytest.mark.parametrize("bad", ["bilinear", None, "Nearest"])
def test_bad_upsampling_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match=r"upsample must be one of transpose, nearest, got"):
        DCGANGenerator(image_size=16, upsample=bad)


def test_the_two_upsamplings_do_not_load_each_others_weights():
    t = DCGANGenerator(z_dim=8, image_size=16, width=4, upsample="transpose")
    n = DCGANGenerator(z_dim=8, image_size=16, width=4, upsample="nearest")
    with pytest.raises(RuntimeError):
        n.load_state_dict(t.state_dict())
