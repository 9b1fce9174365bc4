"""Image degradations for Phase-2 negatives: copies of feature images that look unclear.

``strength`` in [0, 1] sets how strong each kind is, for an image of side S:

- ``downsample``: shrink (area average) to ``S / (2 + 6 * strength)`` (at least 2 px), enlarge back bilinearly.
- ``blur``: Gaussian blur with sigma ``(0.5 + 2.5 * strength) * S / 64`` pixels (reflect padding).
- ``noise``: add Gaussian noise with std ``0.05 + 0.45 * strength`` (images in [-1, 1]), then clamp.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from multifeat.errors import ConfigError

DEGRADE_KINDS: tuple[str, ...] = ("downsample", "blur", "noise")


def check_kinds(kinds) -> tuple[str, ...]:
    kinds = tuple(kinds)
    if not kinds:
        raise ConfigError(f"degrade_kinds is empty; choose from {', '.join(DEGRADE_KINDS)}")
    bad = [k for k in kinds if k not in DEGRADE_KINDS]
    if bad:
        raise ConfigError(f"degrade_kinds: unknown kind(s) {bad}; valid: {', '.join(DEGRADE_KINDS)}")
    return kinds


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian kernel, radius ceil(3 sigma)."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def degrade(image: torch.Tensor, kind: str, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Degrade one image [3,S,S] (or a batch [N,3,S,S]) in [-1, 1]; returns the same shape."""
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"degradation strength must be in [0, 1], got {strength}")
    single = image.ndim == 3
    x = image.unsqueeze(0) if single else image
    x = x.float()
    s = x.shape[-1]
    if kind == "downsample":
        small = max(2, int(round(s / (2.0 + 6.0 * strength))))
        y = F.interpolate(F.interpolate(x, size=(small, small), mode="area"), size=x.shape[-2:], mode="bilinear", align_corners=False)
    elif kind == "blur":
        k = gaussian_kernel((0.5 + 2.5 * strength) * s / 64.0)
        r = (k.numel() - 1) // 2
        c = x.shape[1]
        pad_mode = "reflect" if r < min(x.shape[-2:]) else "replicate"
        y = F.conv2d(F.pad(x, (r, r, 0, 0), mode=pad_mode), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode=pad_mode), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    elif kind == "noise":
        std = 0.05 + 0.45 * strength
        y = (x + std * torch.randn(x.shape, generator=generator)).clamp_(-1.0, 1.0)
    else:
        raise ConfigError(f"unknown degradation kind {kind!r}; valid: {', '.join(DEGRADE_KINDS)}")
    return y[0] if single else y
