"""Reading a folder of images (PNG/JPG) into a batch ``[N, 3, S, S]`` in [-1, 1]."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from multifeat.errors import DataError
from multifeat.utils.images import from_uint8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (sorted by name); errors name the folder."""
    root = Path(folder)
    if not root.exists():
        raise DataError(f"image folder '{root}' does not exist")
    if not root.is_dir():
        raise DataError(f"'{root}' is not a folder; expected a folder of .png/.jpg images")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"image folder '{root}' holds no .png/.jpg images")
    return files


def load_image_folder(folder: str | os.PathLike, size: int | None = None, limit: int | None = None) -> torch.Tensor:
    """Load up to ``limit`` images of ``folder`` as float ``[N, 3, S, S]`` in [-1, 1].

    Images are converted to RGB and, when ``size`` is given (or they differ in size), resized to a
    square of side ``size`` (default: the first image's width) with bicubic filtering.
    """
    files = list_images(folder)
    if limit is not None:
        files = files[: int(limit)]
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if size is None:
                    size = im.width
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BICUBIC)
                arrays.append(np.asarray(im, dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read image '{f}': {e}") from e
    return from_uint8(torch.from_numpy(np.stack(arrays)))


__all__ = ["IMAGE_SUFFIXES", "list_images", "load_image_folder"]
