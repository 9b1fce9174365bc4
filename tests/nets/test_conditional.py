"""Conditional generator and projection discriminator: shapes, label effects, the projection formula."""

import pytest
import torch

from multifeat.errors import ConfigError
from multifeat.nets.conditional import ConditionalGenerator, ProjectionDiscriminator
from multifeat.nets.dcgan import DCGANGenerator


def tiny_g(**kw):
    args = dict(num_labels=3, z_dim=8, image_size=16, width=4, max_width=16, embed_dim=5)
    args.update(kw)
    return ConditionalGenerator(**args)


def tiny_d(**kw):
    args = dict(num_labels=3, image_size=16, width=4, max_width=16)
    args.update(kw)
    return ProjectionDiscriminator(**args)


@pytest.mark.parametrize("size", [16, 32])
def test_shapes(size):
    g = tiny_g(image_size=size)
    d = tiny_d(image_size=size)
    y = torch.tensor([[1.0, 0, 1], [0, 0, 0]])
    z = torch.randn(2, 8)
    x = g(z, y)
    assert x.shape == (2, 3, size, size)
    assert not torch.allclose(g(z, y.flip(0)), x, atol=1e-5)  # the labels reach the image
    assert d(x, y).shape == (2,)
    assert d.features(x).shape == (2, d.feature_dim) == (2, d.trunk.feature_dim * 16)
    assert isinstance(g.net, DCGANGenerator) and g.net.z_dim == 8 + 5
    assert d.embed.weight.shape == (d.feature_dim, 3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())  # default norm: none
    assert not g.film and any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_projection_output_equals_psi_plus_vy_phi_by_hand(norm):
    torch.manual_seed(0)
    d = tiny_d(norm=norm).eval()
    with torch.no_grad():  # make psi's bias and V clearly non-trivial
        d.trunk.head.bias.fill_(0.3)
        d.embed.weight.normal_(0.0, 0.5)
    x = torch.randn(4, 3, 16, 16)
    y = torch.tensor([[1.0, 1, 0], [0, 0, 0], [0, 1, 1], [1, 1, 1]])
    with torch.no_grad():
        fmap = d.trunk.forward_features(x)  # [N, C, 4, 4]
        phi = fmap.reshape(4, -1)
        w = d.trunk.head.weight.reshape(1, -1)  # the 4x4 head conv as a row vector over phi
        psi = phi @ w[0] + d.trunk.head.bias[0]
        V = d.embed.weight  # [feature_dim, A]
        proj = torch.stack([torch.dot(V @ y[i], phi[i]) for i in range(4)])
        out, psi_d, proj_d = d(x, y, return_parts=True)
    torch.testing.assert_close(psi_d, psi, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(proj_d, proj, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, psi + proj, rtol=1e-5, atol=1e-5)
    # with no label active the projection vanishes: D is the plain DCGAN discriminator trunk + head
    torch.testing.assert_close(out[1], d.trunk(x[1:2])[0], rtol=1e-5, atol=1e-5)
    # multi-hot = sum of per-attribute projections (one-hot = the class-embedding projection)
    with torch.no_grad():
        one = [d(x, torch.eye(3)[a].expand(4, 3)) - d(x, torch.zeros(4, 3)) for a in range(3)]
        both = d(x, torch.tensor([[1.0, 1, 0]]).expand(4, 3)) - d(x, torch.zeros(4, 3))
    torch.testing.assert_close(both, one[0] + one[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("film", [False, True])
def test_labels_change_the_generator_output_which_is_dcgan_of_concat(film):
    torch.manual_seed(1)
    g = tiny_g(film=film).eval()
    assert hasattr(g, "modulation") == film
    z = torch.randn(3, 8)
    y0 = torch.zeros(3, 3)
    y1 = torch.tensor([[1.0, 1, 0]]).expand(3, 3)
    with torch.no_grad():
        out0, out1 = g(z, y0), g(z, y1)
        # (a fresh DCGAN's outputs are tiny, so compare relative to their size)
        assert (out0 - out1).abs().max() > 0.1 * out0.abs().max()
        # output = DCGAN(concat(z, W_e y + b_e)); with film the modulation starts at the identity
        ref = g.net(torch.cat([z, y1 @ g.embed.weight.T + g.embed.bias], 1))
    torch.testing.assert_close(out1, ref)


def test_film_modulation_acts_per_stage():
    torch.manual_seed(2)
    g = tiny_g(film=True).eval()
    z = torch.randn(2, 8)
    y = torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    c4 = g.net.channels[4]
    with torch.no_grad():
        # gamma_4 = -1 (scale 0), beta_4 = 0.5 at the 4x4 stage for every label vector
        g.modulation["4"].bias[:c4] = -1.0
        g.modulation["4"].bias[c4:] = 0.5
        out = g(z, y)
        h = torch.cat([z, g.embed(y)], 1)
        ref = g.net(h, hook=lambda r, f: torch.full_like(f, 0.5) if r == 4 else f)
    torch.testing.assert_close(out, ref)
    # a label-dependent modulation: the label's weight column changes the output only where set
    with torch.no_grad():
        g.modulation["8"].weight[:, 2] = 1.0
        a = g(z, torch.tensor([[1.0, 0, 0], [1.0, 0, 1]]))
        b = g(z, torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]))
    torch.testing.assert_close(a[0], b[0])
    assert (a[1] - b[1]).abs().max() > 0.1 * b[1].abs().max()


def test_gradients_reach_every_conditioning_parameter():
    g, d = tiny_g(film=True), tiny_d()
    y = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    d(g(torch.randn(2, 8), y), y).sum().backward()
    assert g.embed.weight.grad.abs().sum() > 0
    assert all(m.weight.grad.abs().sum() > 0 for m in g.modulation.values())
    assert d.embed.weight.grad.abs().sum() > 0


def test_bad_arguments_are_clear():
    with pytest.raises(ConfigError, match="num_labels"):
        tiny_g(num_labels=0)
    with pytest.raises(ConfigError, match="embed_dim"):
        tiny_g(embed_dim=0)
    with pytest.raises(ValueError, match=r"labels must have shape \[2, 3\]"):
        tiny_g()(torch.randn(2, 8), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"labels must have shape \[2, 3\]"):
        tiny_d()(torch.randn(2, 3, 16, 16), torch.zeros(3, 3))
