"""CelebA with attribute labels, read from a local copy (nothing is downloaded, no checksum gate).

Layout (``root`` may be the folder that holds ``celeba/`` or ``celeba/`` itself)::

    root/celeba/img_align_celeba/000001.jpg ...
    root/celeba/list_attr_celeba.txt        official: line 1 the count, line 2 the 40 names,
                                            then "000001.jpg  -1  1 ..." (values 1 / -1)
      or  list_attr_celeba.csv              Kaggle copy: "image_id,5_o_Clock_Shadow,..." then rows
    root/celeba/list_eval_partition.txt     optional: "000001.jpg 0" (0 train, 1 valid, 2 test)
      or  list_eval_partition.csv           optional: "image_id,partition"

A partial copy works: only images that have both a file and a label row are used, and a
:class:`DataWarning` reports both counts. Without a partition file, ``train``/``valid`` come from a
seeded random split (``val_fraction``, ``seed``).

Attribute names: the 40 CelebA columns, plus *derived* any-of groups. Built in:
``bald = Bald``, ``beard = Goatee or Mustache or not No_Beard``, ``eyeglasses = Eyeglasses``,
``smiling = Smiling``; ``derived`` adds or overrides groups (``"!Name"`` negates a column).
"""

from __future__ import annotations

import copy
import csv
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from multifeat.data.cache import CacheableDataset
from multifeat.data.common import ATTRIBUTES, DataWarning, parse_flag, split_indices
from multifeat.data.loading import crop_resize, open_rgb, uint8_to_float
from multifeat.errors import ConfigError, DataError

#: the package's attribute names as any-of groups of CelebA columns ("!" negates)
CELEBA_DERIVED: dict[str, list[str]] = {
    "bald": ["Bald"],
    "beard": ["Goatee", "Mustache", "!No_Beard"],
    "eyeglasses": ["Eyeglasses"],
    "smiling": ["Smiling"],
}
IMAGE_DIR = "img_align_celeba"
_IMAGE_EXT = (".jpg", ".jpeg", ".png")
SPLITS = {"train": 0, "valid": 1, "test": 2}


def celeba_dir(root: str | os.PathLike) -> Path:
    """The folder that holds ``img_align_celeba``: ``root/celeba`` or ``root`` itself."""
    r = Path(root)
    if (r / "celeba" / IMAGE_DIR).is_dir():
        return r / "celeba"
    if (r / IMAGE_DIR).is_dir():
        return r
    raise DataError(
        f"CelebA not found under '{r}': expected '{r / 'celeba' / IMAGE_DIR}/' with the aligned JPEGs "
        f"and '{r / 'celeba' / 'list_attr_celeba.txt'}' (or .csv)"
    )


def _find(base: Path, stem: str) -> Path | None:
    for ext in (".txt", ".csv"):
        if (base / f"{stem}{ext}").is_file():
            return base / f"{stem}{ext}"
    return None


def has_official_partition(root: str | os.PathLike) -> bool:
    """Whether a ``list_eval_partition`` file exists for the CelebA copy under ``root``."""
    return _find(celeba_dir(root), "list_eval_partition") is not None


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"'{path}' is not a text file (UTF-8 decoding failed at byte {e.start})") from e


_VALID_VALUES = frozenset({"1", "-1", "0"})


def _parse_value(tok: str, path: Path, lineno: int, col: str) -> bool:
    t = tok.strip()
    if t == "1":
        return True
    if t in ("-1", "0"):
        return False
    raise DataError(f"{path}:{lineno}: value {tok!r} for '{col}' is not 1 or -1")


def read_attr_file(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt`` (official) or ``.csv`` (Kaggle).

    Returns (attribute names, file names, bool array [rows, attributes]). A malformed line raises
    :class:`DataError` naming the file and line number; a count line that disagrees with the rows
    only warns.
    """
    path = Path(path)
    lines = _read_lines(path)
    names: list[str]
    rows: list[tuple[int, list[str]]] = []
    declared = None
    if path.suffix.lower() == ".csv":
        reader = csv.reader(lines)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: the file is empty; expected a header 'image_id,<attribute names>'") from None
        if not header or header[0].strip() != "image_id" or len(header) < 2:
            raise DataError(f"{path}:1: expected a header 'image_id,<attribute names>', got {lines[0][:80]!r}")
        names = [h.strip() for h in header[1:]]
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            rows.append((lineno, [c.strip() for c in row]))
        first_data = 2
    else:
        if len(lines) < 2:
            raise DataError(f"{path}: expected a count line and a line of attribute names, found {len(lines)} line(s)")
        try:
            declared = int(lines[0].strip())
        except ValueError:
            raise DataError(f"{path}:1: expected the number of images, got {lines[0][:80]!r}") from None
        names = lines[1].split()
        if not names:
            raise DataError(f"{path}:2: expected the attribute names, the line is empty")
        for lineno, line in enumerate(lines[2:], start=3):
            if line.strip():
                rows.append((lineno, line.split()))
        first_data = 3
    if len(set(names)) != len(names):
        raise DataError(f"{path}:{first_data - 1}: duplicate attribute names")
    files: list[str] = []
    flat: list[str] = []
    seen: dict[str, int] = {}
    width = len(names) + 1
    for lineno, toks in rows:
        if len(toks) != width:
            raise DataError(f"{path}:{lineno}: expected a file name and {len(names)} values, found {len(toks)} field(s)")
        fname = toks[0]
        if fname in seen:
            raise DataError(f"{path}:{lineno}: '{fname}' already listed on line {seen[fname]}")
        seen[fname] = lineno
        files.append(fname)
        flat.extend(toks[1:])
    if not _VALID_VALUES.issuperset(flat):  # find the first bad value to name its line and column
        for lineno, toks in rows:
            for j, tok in enumerate(toks[1:]):
                _parse_value(tok, path, lineno, names[j])
    values = (np.array(flat, dtype="U2") == "1").reshape(len(files), len(names)) if files \
        else np.zeros((0, len(names)), dtype=bool)
    if declared is not None and declared != len(files):
        warnings.warn(f"{path}: line 1 declares {declared} images but {len(files)} rows follow; using the rows", DataWarning, stacklevel=2)
    return names, files, values


def read_partition_file(path: str | os.PathLike) -> dict[str, int]:
    """Parse ``list_eval_partition.txt`` / ``.csv`` into ``{file name: 0|1|2}``."""
    path = Path(path)
    lines = _read_lines(path)
    out: dict[str, int] = {}
    is_csv = path.suffix.lower() == ".csv"
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        toks = [t.strip() for t in line.split(",")] if is_csv else line.split()
        if is_csv and lineno == 1 and toks[0] == "image_id":
            continue
        if len(toks) != 2 or toks[1] not in ("0", "1", "2"):
            raise DataError(f"{path}:{lineno}: expected '<file name>{',' if is_csv else ' '}<0|1|2>', got {line[:80]!r}")
        out[toks[0]] = int(toks[1])
    return out


def _resolve(name: str, columns: list[str], groups: Mapping[str, list[str]]) -> list[tuple[int, bool]]:
    """A name -> list of (column index, negate) terms of an any-of group."""
    if name in groups:
        terms = []
        for t in groups[name]:
            neg = t.startswith("!")
            col = t[1:] if neg else t
            if col not in columns:
                raise DataError(f"derived attribute '{name}' uses unknown CelebA column '{col}'; valid columns: {', '.join(columns)}")
            terms.append((columns.index(col), neg))
        if not terms:
            raise ConfigError(f"derived attribute '{name}' has no terms; give CelebA columns like ['Goatee', '!No_Beard']")
        return terms
    if name in columns:
        return [(columns.index(name), False)]
    valid = list(groups) + [c for c in columns if c not in groups]
    raise DataError(f"unknown attribute '{name}'; valid names: {', '.join(valid)}")


def _evaluate(values: np.ndarray, terms: list[tuple[int, bool]]) -> np.ndarray:
    out = np.zeros(values.shape[0], dtype=bool)
    for col, neg in terms:
        out |= ~values[:, col] if neg else values[:, col]
    return out


class CelebADataset(CacheableDataset):
    """Aligned CelebA faces with binary attributes.

    Args:
        root: folder holding ``celeba/`` (or the ``celeba`` folder itself).
        image_size: output side S (default 64). Images are centre-cropped to a square of side
            ``crop`` (default: the shorter side, 178 for aligned CelebA) and resized.
        attributes: names of the ``attrs`` vector in order (default ``ATTRIBUTES``); CelebA columns
            or derived names.
        require: filter ``{name: 1/-1 or true/false}``; only matching images are kept.
        derived: extra any-of groups, merged over :data:`CELEBA_DERIVED`.
        split: ``"all"``, ``"train"``, ``"valid"`` or ``"test"`` (official partition file when present,
            else a seeded split with ``val_fraction``; ``test`` then needs the partition file).
        val_fraction, seed: the fallback split.

    Items: ``{"image": float [3,S,S] in [-1,1], "attrs": float [A] 0/1, "index": int}``.
    Attributes: ``num_label_rows``, ``num_image_files`` (the partial-copy counts), ``files``, ``labels``,
    ``partitions`` (each item's official split id, -1 without a partition file), ``has_partition``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int = 64,
        attributes: list[str] | tuple[str, ...] | None = None,
        require: Mapping[str, object] | None = None,
        derived: Mapping[str, list[str]] | None = None,
        split: str = "all",
        val_fraction: float = 0.1,
        seed: int = 0,
        crop: int | None = None,
    ) -> None:
        if split not in ("all", *SPLITS):
            raise ConfigError(f"split must be one of all, train, valid, test; got {split!r}")
        base = celeba_dir(root)
        self.base = base
        self.image_dir = base / IMAGE_DIR
        self.image_size = int(image_size)
        self.crop = crop
        attr_file = _find(base, "list_attr_celeba")
        if attr_file is None:
            raise DataError(f"CelebA labels not found: expected '{base / 'list_attr_celeba.txt'}' or '{base / 'list_attr_celeba.csv'}'")
        columns, files, values = read_attr_file(attr_file)
        groups = {**CELEBA_DERIVED, **(dict(derived) if derived else {})}
        groups = {k: v for k, v in groups.items() if all((t[1:] if t.startswith("!") else t) in columns for t in v) or k in (derived or {})}
        self.columns = columns
        self.attribute_names = tuple(attributes) if attributes is not None else ATTRIBUTES
        terms = [_resolve(a, columns, groups) for a in self.attribute_names]
        req = {}
        for name, want in (require or {}).items():
            req[name] = (_resolve(name, columns, groups), parse_flag(want, f"require['{name}']"))

        # the partial-copy intersection
        present = {e.name for e in os.scandir(self.image_dir) if e.is_file() and e.name.lower().endswith(_IMAGE_EXT)}
        self.num_label_rows, self.num_image_files = len(files), len(present)
        keep = np.array([f in present for f in files], dtype=bool)
        n_both = int(keep.sum())
        if n_both == 0:
            raise DataError(f"no CelebA image in '{self.image_dir}' has a label row in '{attr_file}' "
                            f"({len(present)} image files, {len(files)} label rows)")
        if n_both < len(files) or n_both < len(present):
            warnings.warn(
                f"partial CelebA copy under '{base}': {len(present)} image files, {len(files)} label rows; "
                f"using the {n_both} images that have both ({len(files) - n_both} rows without an image, "
                f"{len(present) - n_both} images without a row)", DataWarning, stacklevel=2)
        # split
        part_file = _find(base, "list_eval_partition")
        self.has_partition = part_file is not None
        part_ids = np.full(len(files), -1, dtype=np.int8)
        if part_file is not None:
            parts = read_partition_file(part_file)
            part_ids = np.array([parts.get(f, -1) for f in files], dtype=np.int8)
        if split != "all":
            if part_file is not None:
                keep &= part_ids == SPLITS[split]
            else:
                if split == "test":
                    raise DataError(f"split='test' needs '{base / 'list_eval_partition.txt'}' (or .csv); "
                                    "without it only train/valid (a seeded split) exist")
                idx = np.flatnonzero(keep)
                tr, va = split_indices(len(idx), val_fraction, seed)
                keep = np.zeros_like(keep)
                keep[idx[tr if split == "train" else va]] = True
        # filter
        for t, want in req.values():
            keep &= _evaluate(values, t) == want
        if not keep.any():
            raise DataError(f"no CelebA image matches require={dict(require or {})} in split '{split}' "
                            f"({n_both} labelled images available)")
        rows = np.flatnonzero(keep)
        self.files = [files[i] for i in rows]
        #: official partition of each item (0 train, 1 valid, 2 test; -1: not listed or no partition file)
        self.partitions = part_ids[rows]
        sel = values[rows]
        self.labels = torch.from_numpy(np.stack([_evaluate(sel, t) for t in terms], axis=1).astype(np.float32)) \
            if terms else torch.zeros((len(rows), 0))

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, rows) -> CelebADataset:
        """A dataset of the items ``rows`` of this one (same files, labels and settings; no re-reading)."""
        rows = [int(r) for r in rows]
        out = copy.copy(self)
        out.files = [self.files[r] for r in rows]
        out.labels = self.labels[rows] if rows else self.labels[:0]
        out.partitions = self.partitions[rows] if rows else self.partitions[:0]
        out.memory = None
        return out

    def read_item(self, i: int) -> dict:
        path = self.image_dir / self.files[i]
        try:
            img = open_rgb(path)
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read CelebA image '{path}': {e}") from e
        return {"image": uint8_to_float(crop_resize(img, self.image_size, self.crop)), "attrs": self.labels[i].clone(), "index": i}
