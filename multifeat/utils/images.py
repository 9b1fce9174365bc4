"""Image conversions at file boundaries. Inside the library images are float NCHW in [-1, 1]."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import torch
from PIL import Image

from multifeat.utils.files import atomic_write_bytes


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (N)CHW -> uint8 (N)HWC, clamped and rounded."""
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu()


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N)HWC -> float (N)CHW in [-1, 1]."""
    return images.movedim(-1, -3).float().div(127.5).sub(1)


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = -1.0) -> torch.Tensor:
    """Tile a batch [N,C,H,W] into one image [C, H', W'] (rows of ``nrow``, square by default)."""
    if images.ndim != 4:
        raise ValueError(f"make_grid expects a batch [N,C,H,W], got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol_rows = math.ceil(n / nrow)
    grid = images.new_full((c, ncol_rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i in range(n):
        r, k = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save one [C,H,W] image in [-1, 1] as PNG (atomically)."""
    arr = to_uint8(image).numpy()
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, upscale: int = 1) -> Path:
    """Save a batch [N,C,H,W] in [-1, 1] as one PNG grid; ``upscale`` enlarges small images (nearest)."""
    grid = make_grid(images.detach().float().cpu(), nrow=nrow)
    if upscale > 1:
        grid = grid.repeat_interleave(upscale, dim=1).repeat_interleave(upscale, dim=2)
    return save_image(grid, path)
