"""EMA of network weights: the update rule against numbers worked out by hand."""

import pytest
import torch
from torch import nn

from multifeat.errors import ConfigError
from multifeat.nets.ema import EMA


def _net(w: float, b: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.fill_(w)
        net[0].bias.fill_(b)
    return net


def test_update_by_hand():
    live = _net(1.0, -2.0)
    ema = EMA(live, decay=0.9)
    assert ema.module[0].weight.item() == 1.0 and not ema.module[0].weight.requires_grad
    with torch.no_grad():
        live[0].weight.fill_(3.0)
        live[0].bias.fill_(0.0)
        live[1].running_mean.fill_(5.0)
    ema.update(live)
    # 0.9 * 1 + 0.1 * 3 = 1.2 ; 0.9 * -2 + 0.1 * 0 = -1.8 ; buffers copied
    assert ema.module[0].weight.item() == pytest.approx(1.2)
    assert ema.module[0].bias.item() == pytest.approx(-1.8)
    assert ema.module[1].running_mean.item() == 5.0
    with torch.no_grad():
        live[0].weight.fill_(5.0)
    ema.update(live)
    assert ema.module[0].weight.item() == pytest.approx(0.9 * 1.2 + 0.1 * 5.0)  # 1.58
    # an explicit per-update decay (StyleGAN2 style): 0.5 * 1.58 + 0.5 * 5 = 3.29
    ema.update(live, decay=0.5)
    assert ema.module[0].weight.item() == pytest.approx(3.29)
    assert int(ema.num_updates) == 3
    # decay 0 copies
    ema.update(live, decay=0.0)
    assert ema.module[0].weight.item() == 5.0


def test_state_dict_holds_average_and_counter():
    ema = EMA(_net(1.0, 0.0), decay=0.5)
    keys = set(ema.state_dict())
    assert {"module.0.weight", "module.0.bias", "module.1.running_mean", "num_updates"} <= keys
    clone = EMA(_net(0.0, 0.0), decay=0.5)
    clone.load_state_dict(ema.state_dict())
    assert clone.module[0].weight.item() == 1.0


def test_copy_from_and_forward():
    live = _net(2.0, 1.0).eval()
    ema = EMA(_net(0.0, 0.0).eval(), decay=0.99)
    ema.copy_from(live)
    x = torch.randn(4, 1)
    torch.testing.assert_close(ema.eval()(x), live(x))


def test_bad_decay_and_mismatch():
    with pytest.raises(ConfigError, match="ema_decay"):
        EMA(_net(0, 0), decay=1.0)
    with pytest.raises(ConfigError):
        EMA(_net(0, 0), decay=-0.1)
    ema = EMA(_net(0, 0))
    with pytest.raises(ValueError, match="parameters"):
        ema.update(nn.Linear(1, 1, bias=False))
