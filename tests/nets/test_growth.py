"""G3 grown from G1: exact equality at initialisation, configurable additions, named points."""

import copy

import pytest
import torch

from multifeat.errors import ConfigError
from multifeat.nets.dcgan import DCGANGenerator
from multifeat.nets.growth import GrownGenerator, ResidualBlock, normalise_add_blocks, parse_point


def _g1(norm="batch", seed=0):
    torch.manual_seed(seed)
    g = DCGANGenerator(z_dim=8, image_size=32, width=4, max_width=16, norm=norm)
    # move batch-norm running statistics away from (0, 1) so eval mode is a real check
    g.train()
    with torch.no_grad():
        for _ in range(3):
            g(torch.randn(6, 8))
    return g


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_grown_equals_base_exactly_in_eval_mode(norm):
    g1 = _g1(norm).eval()
    g3 = GrownGenerator(copy.deepcopy(g1), {8: 1, 16: 2, 32: 1}).eval()
    z = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.equal(g3(z), g1(z))
        assert torch.equal(torch.tanh(g3.pre_tanh(z)), g1(z))


def test_grown_equals_base_exactly_in_train_mode_with_same_bn_state():
    g1 = _g1("batch")
    g3 = GrownGenerator(copy.deepcopy(g1), {4: 1, 16: 1})
    g1.train(), g3.train()
    z = torch.randn(7, 8)
    assert torch.equal(g3(z), g1(z))
    # both updated their running statistics identically (the base's own BN layers saw the same input)
    for (n1, b1), (n3, b3) in zip(g1.named_buffers(), g3.base.named_buffers()):
        assert n1 == n3 and torch.equal(b1, b3)


def test_added_blocks_are_configurable_and_train():
    g3 = GrownGenerator(_g1(), {16: 2, "feat32": 1})
    assert g3.add_blocks == {16: 2, 32: 1}
    assert len(g3.blocks["16"]) == 2 and len(g3.blocks["32"]) == 1
    assert all(isinstance(b, ResidualBlock) for b in g3.blocks["16"])
    assert GrownGenerator(_g1(), [8, 16]).add_blocks == {8: 1, 16: 1}
    assert GrownGenerator(_g1(), {}).added_parameters() == []
    assert GrownGenerator(_g1(), None).add_blocks == {16: 1}  # default
    # zero-initialised last conv: gradient reaches it, and one step makes G3 differ from G1
    z = torch.randn(4, 8)
    g3(z).square().mean().backward()
    w = g3.blocks["16"][0].conv2.weight
    assert w.grad is not None and w.grad.abs().sum() > 0
    with torch.no_grad():
        w -= 0.1 * w.grad.sign()
    g3.eval()
    base_only = copy.deepcopy(g3.base).eval()
    with torch.no_grad():
        assert not torch.equal(g3(z), base_only(z))


def test_bad_add_blocks_and_points_raise_config_errors():
    res = [4, 8, 16, 32]
    with pytest.raises(ConfigError, match="64"):
        normalise_add_blocks({64: 1}, res)
    with pytest.raises(ConfigError, match="non-negative"):
        normalise_add_blocks({16: -1}, res)
    assert normalise_add_blocks({"16": 1, 8: 0}, res) == {16: 1}
    assert parse_point("feat16", res) == 16 and parse_point("image", res) == "image"
    with pytest.raises(ConfigError, match="feat64"):
        parse_point("feat64", res)


def test_features_and_hook_order():
    g3 = GrownGenerator(_g1(), {16: 1}).eval()
    z = torch.randn(3, 8)
    seen = []

    def hook(res, h):
        seen.append((res, tuple(h.shape)))
        return h

    with torch.no_grad():
        out = g3(z, hook=hook)
        f16 = g3.features(z, 16)
    assert [r for r, _ in seen] == [4, 8, 16, 32]
    assert seen[2][1] == (3, g3.channels[16], 16, 16) and f16.shape == (3, g3.channels[16], 16, 16)
    # replacing the 16x16 map through the hook changes the image; the identity hook does not
    with torch.no_grad():
        assert torch.equal(g3(z, hook=lambda r, h: h), out)
        assert not torch.equal(g3(z, hook=lambda r, h: h * 0 if r == 16 else h), out)
