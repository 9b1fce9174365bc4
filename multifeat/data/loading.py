"""Reading image files into RGB tensors: mode conversion, centre crop and resize.

Conversions to RGB (``to_rgb``):

- ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's own conversion (CMYK JPEGs
  written by Adobe software are un-inverted by Pillow's decoder).
- 16-bit greyscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``) and 32-bit ``I``: the top 8 bits of
  the 16-bit value (``v >> 8``), so full scale maps to 255. (Pillow's plain ``convert`` would clip every
  value above 255 to white.) ``I`` images whose values all fit in 0..255 are taken as 8-bit.
- ``F`` (float): values in [0, 1] are scaled by 255, otherwise clipped to [0, 255].
- Transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour): composited over white.
- EXIF orientation tags are applied.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, ImageOps

#: the background that transparent pixels are composited onto
ALPHA_BACKGROUND = (255, 255, 255)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded Pillow image of any common mode to 8-bit ``RGB`` (see module doc)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img)
        arr = arr.astype(np.int64)
        if mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 255:
            out = arr
        else:
            out = np.clip(arr, 0, 65535) >> 8
        return Image.fromarray(out.astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open, fully decode, apply EXIF orientation and convert to RGB. Raises Pillow's errors unchanged."""
    with Image.open(path) as im:
        im.load()
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # a broken EXIF block must not make a good image unreadable
            pass
        return to_rgb(im)


def crop_resize(img: Image.Image, size: int, crop: int | None = None) -> torch.Tensor:
    """Centre-crop a square (side ``crop``, default the shorter side) and resize to ``size``.

    Returns uint8 [3, size, size]. Downscaling uses Pillow's antialiased Lanczos filter; upscaling
    uses bicubic.
    """
    w, h = img.size
    side = min(w, h) if crop is None else min(crop, w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS if side > size else Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def uint8_to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 CHW -> float32 CHW in [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)
