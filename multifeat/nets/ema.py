"""Exponential moving average (EMA) of a network's weights.

After every update of the live network ``model``::

    ema_param <- decay * ema_param + (1 - decay) * model_param      (every floating-point parameter)
    ema_buffer <- model_buffer                                      (BatchNorm running stats, counters)

The averaged copy (``EMA.module``) is an ordinary ``nn.Module`` with gradients off; use it for
sampling, in eval mode (its train/eval mode follows its parent like any submodule, so Lightning
does not warn about modules left in eval mode; its parameters are never trained, and its buffers
are overwritten from the live network on every update). Because :class:`EMA` is itself an ``nn.Module``, holding it as an attribute of a
LightningModule puts the averaged weights into the checkpoint (keys ``<attr>.module.*``) and moves
them with ``.to(device)``.

StyleGAN2 computes its decay from the batch size (``0.5 ** (batch / (ema_kimg * 1000))``) and ramps
it up; pass such a per-update value as ``update(model, decay=...)``. :func:`ema_rampup_decay` gives
that ramp for a fixed per-update decay (the DCGAN phases' ``ema_decay`` + ``ema_rampup``).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from multifeat.errors import ConfigError


def check_decay(decay: float, name: str = "ema_decay") -> float:
    """Validate an EMA decay in [0, 1)."""
    decay = float(decay)
    if not 0.0 <= decay < 1.0:
        raise ConfigError(f"{name} must be in [0, 1) (e.g. 0.999), got {decay}")
    return decay


def ema_rampup_decay(decay: float, rampup: float | None, cur_nimg: float, batch: int) -> float:
    """The EMA decay of one update with StyleGAN2-ADA's ramp-up.

    ``decay`` is the full decay per update of ``batch`` images, i.e. a half-life of
    ``ema_nimg = batch * ln(0.5) / ln(decay)`` images. With ``rampup`` the half-life is capped at
    ``cur_nimg * rampup`` (``cur_nimg``: images trained on before this update), as the official
    loop does, and the decay is ``0.5 ** (batch / max(ema_nimg, 1e-8))``: 0 at the first update
    (the average copies G), then growing until it reaches ``decay``. Without ``rampup``: ``decay``.
    """
    if rampup is None or decay <= 0.0:
        return float(decay)
    ema_nimg = batch * math.log(0.5) / math.log(decay)
    ema_nimg = min(ema_nimg, float(cur_nimg) * float(rampup))
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


class EMA(nn.Module):
    """An averaged copy of ``model``.

    Args:
        model: the live network; it is deep-copied once at construction (the copy starts equal to it).
        decay: weight of the old average per update, in [0, 1). 0 copies the live weights.

    Attributes:
        module: the averaged network (``requires_grad=False``).
        num_updates: buffer counting :meth:`update` calls (saved in checkpoints).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        self.decay = check_decay(decay)
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        """Move the average towards ``model``'s current weights; copy its buffers.

        ``model`` must have the same architecture as the averaged copy (same parameter order).
        """
        d = self.decay if decay is None else check_decay(decay, "decay")
        ema_params = [p for p in self.module.parameters()]
        live_params = [p for p in model.parameters()]
        if len(ema_params) != len(live_params):
            raise ValueError(f"EMA.update: model has {len(live_params)} parameters, the average has {len(ema_params)}")
        floats_e, floats_l = [], []
        for pe, pl in zip(ema_params, live_params):
            if pe.is_floating_point():
                floats_e.append(pe)
                floats_l.append(pl.detach().to(pe.dtype))
            else:
                pe.copy_(pl)
        if floats_e:
            # ema + (1 - d) * (live - ema) == d * ema + (1 - d) * live, one fused kernel per dtype/device.
            torch._foreach_lerp_(floats_e, floats_l, 1.0 - d)
        for be, bl in zip(self.module.buffers(), model.buffers()):
            be.copy_(bl)
        self.num_updates += 1

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        """Reset the average to ``model``'s current weights and buffers."""
        for pe, pl in zip(self.module.parameters(), model.parameters()):
            pe.copy_(pl)
        for be, bl in zip(self.module.buffers(), model.buffers()):
            be.copy_(bl)

    def forward(self, *args, **kwargs):
        """Run the averaged network."""
        return self.module(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"decay={self.decay}"
