"""ImageFolderDataset: every image under a folder (recursively), e.g. the "bald dataset".

Rules:

- Files with the extensions jpg, jpeg, png, webp, bmp (any case) are used; other files and
  anything whose name starts with ``.`` (hidden files and folders, macOS ``._*`` forks) are ignored.
  Paths are sorted, so indices are stable.
- Every mode is converted to RGB (:func:`multifeat.data.loading.to_rgb`: greyscale, palette,
  RGBA/LA composited over white, CMYK, 16-bit greyscale scaled by 1/256).
- Setup opens each file's header (``scan="header"``, cheap: size and format, Pillow ``verify()``)
  or decodes it fully (``scan="full"``). Files that fail (corrupt, zero bytes, not an image despite
  the extension) are skipped with ONE :class:`DataWarning` that counts and names them; with
  ``strict=True`` the first one raises :class:`DataError` naming it.
- A file that passed the header scan but fails to decode at load time (e.g. a truncated JPEG) is
  replaced by the next readable image, with one warning per file (``strict``: DataError).
- Images whose shorter side is smaller than ``image_size`` are upscaled (bicubic), counted and
  named in one warning at setup; ``strict=True`` makes them an error.
- A missing or empty folder raises :class:`DataError` naming the path.

Items: ``{"image": float [3,S,S] in [-1,1], "attrs": float [A] (the constant labels), "index": int}``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from multifeat.data.cache import CacheableDataset
from multifeat.data.common import DataWarning, parse_flag
from multifeat.data.loading import crop_resize, open_rgb, uint8_to_float
from multifeat.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, hidden entries skipped); DataError if none."""
    r = Path(root)
    if not r.exists():
        raise DataError(f"image folder '{r}' does not exist")
    if not r.is_dir():
        raise DataError(f"'{r}' is not a folder; give the folder that contains the images")
    found = []
    for dirpath, dirnames, filenames in os.walk(r, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath) / f)
    if not found:
        raise DataError(f"image folder '{r}' contains no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}, searched recursively)")
    return sorted(found)


def _describe(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _summary(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


class ImageFolderDataset(CacheableDataset):
    """All images under ``root`` with constant labels.

    Args:
        root: the folder (searched recursively).
        image_size: output side S (default 64); centre crop (side ``crop`` or the shorter side) + resize.
        attrs: constant labels of every image, e.g. ``{"bald": 1}`` (values 1/0/-1/true/false).
        attribute_names: order of the ``attrs`` vector; default the keys of ``attrs``.
        strict: bad or too small files raise :class:`DataError` instead of a warning.
        scan: ``"header"`` (default, cheap) or ``"full"`` (decode every file at setup).
        crop: centre-crop side in pixels before resizing.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int = 64,
        attrs: Mapping[str, object] | None = None,
        attribute_names: list[str] | tuple[str, ...] | None = None,
        strict: bool = False,
        scan: Literal["header", "full"] = "header",
        crop: int | None = None,
    ) -> None:
        if scan not in ("header", "full"):
            raise ConfigError(f"scan must be 'header' or 'full', got {scan!r}")
        self.root = Path(root)
        self.image_size = int(image_size)
        self.strict = bool(strict)
        self.crop = crop
        labels = {k: parse_flag(v, f"attrs['{k}']") for k, v in (attrs or {}).items()}
        names = tuple(attribute_names) if attribute_names is not None else tuple(labels)
        missing = [a for a in names if a not in labels]
        if missing:
            raise ConfigError(f"attribute(s) {missing} have no constant label; pass attrs={{'{missing[0]}': 1}} (or 0)")
        self.attribute_names = names
        self.label = torch.tensor([float(labels[a]) for a in names], dtype=torch.float32)

        bad, small, good = [], [], []
        for path in list_images(self.root):
            try:
                size = self._check(path, scan)
            except _READ_ERRORS as e:
                if self.strict:
                    raise DataError(f"cannot read image '{path}': {e}") from e
                bad.append(f"{_describe(path, self.root)} ({type(e).__name__})")
                continue
            side = min(size) if crop is None else min(crop, *size)
            if side < self.image_size:
                if self.strict:
                    raise DataError(f"image '{path}' is {size[0]}x{size[1]}, smaller than image_size={self.image_size} (strict mode)")
                small.append(f"{_describe(path, self.root)} ({size[0]}x{size[1]})")
            good.append(path)
        self.skipped = bad
        self.upscaled = small
        if bad:
            warnings.warn(f"skipped {len(bad)} unreadable file(s) in '{self.root}': {_summary(bad)}", DataWarning, stacklevel=2)
        if not good:
            raise DataError(f"image folder '{self.root}' has no readable images ({len(bad)} file(s) failed to open)")
        if small:
            warnings.warn(f"{len(small)} image(s) in '{self.root}' are smaller than {self.image_size} px and will be upscaled: "
                          f"{_summary(small)}", DataWarning, stacklevel=2)
        self.files = good
        self._failed: set[int] = set()

    @staticmethod
    def _check(path: Path, scan: str) -> tuple[int, int]:
        if scan == "full":
            return open_rgb(path).size
        with Image.open(path) as im:
            size = im.size
            im.verify()
        return size

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> torch.Tensor:
        return crop_resize(open_rgb(self.files[i]), self.image_size, self.crop)

    def read_item(self, i: int) -> dict:
        n = len(self.files)
        for k in range(n):
            j = (i + k) % n
            if j in self._failed:
                continue
            try:
                img = self._load(j)
            except _READ_ERRORS as e:
                if self.strict:
                    raise DataError(f"cannot decode image '{self.files[j]}': {e}") from e
                self._failed.add(j)
                warnings.warn(f"cannot decode '{self.files[j]}' ({e}); using the next readable image instead", DataWarning, stacklevel=2)
                continue
            return {"image": uint8_to_float(img), "attrs": self.label.clone(), "index": i}
        raise DataError(f"no image in '{self.root}' could be decoded")
