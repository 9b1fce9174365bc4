"""Adaptive instance normalisation (AdaIN; Huang & Belongie 2017, arXiv:1703.06868).

``AdaIN(c, s) = σ(s) · (c − μ(c)) / σ(c) + μ(s)``

``μ`` and ``σ`` are taken per sample and per channel over the spatial positions, so the result has
the *spatial layout* of the content ``c`` and the *per-channel statistics* (mean and standard
deviation) of the style ``s``. Shapes: ``content`` [N, C, *spatial] and ``style`` [N, C, *spatial']
(the spatial sizes may differ; ``N`` and ``C`` must match) -> [N, C, *spatial].

``σ(x) = sqrt(var(x) + eps)`` with the population variance. A constant content map (``var = 0``)
therefore gives ``(c − μ(c)) = 0`` and the output is ``μ(s)``: no division by zero, no NaN, and a
finite gradient (``d sqrt(v + eps) / dv = 1 / (2 sqrt(eps))`` at ``v = 0``).
"""

from __future__ import annotations

import torch
from torch import nn


def channel_stats(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and ``sqrt(var + eps)`` over the spatial dims.

    ``x`` [N, C, *spatial] -> (mean, std), each [N, C, 1, ..., 1] (broadcastable against ``x``).
    """
    if x.ndim < 3:
        raise ValueError(f"AdaIN expects [N, C, *spatial] tensors, got shape {tuple(x.shape)}")
    dims = tuple(range(2, x.ndim))
    var, mean = torch.var_mean(x, dim=dims, keepdim=True, unbiased=False)
    return mean, torch.sqrt(var + eps)


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``σ(style) · (content − μ(content)) / σ(content) + μ(style)`` per sample and channel.

    Args:
        content: [N, C, *spatial] — supplies the spatial structure.
        style: [N, C, *spatial'] — supplies the per-channel mean and standard deviation.
        eps: added to both variances (default 1e-5).

    Returns:
        [N, C, *spatial], the dtype of ``content`` (statistics of half-precision inputs are
        computed in float32).
    """
    if content.shape[:2] != style.shape[:2]:
        raise ValueError(
            f"AdaIN content and style must agree in batch and channels, got {tuple(content.shape)} and {tuple(style.shape)}"
        )
    c, s = _upcast(content), _upcast(style).to(_upcast(content).dtype)
    c_mean, c_std = channel_stats(c, eps)
    s_mean, s_std = channel_stats(s, eps)
    return ((c - c_mean) / c_std * s_std + s_mean).to(content.dtype)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    # half-precision statistics are computed in float32 (mixed precision); float64 stays float64
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class AdaIN(nn.Module):
    """Module form of :func:`adain` (no parameters): ``AdaIN(eps)(content, style)``."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return adain(content, style, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
