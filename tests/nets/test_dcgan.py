import pytest
import torch

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
