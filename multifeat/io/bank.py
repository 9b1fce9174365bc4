"""The negative bank on disk: Phase 1's unclear early samples, read by Phase 2 as negatives.

Layout of a bank folder::

    <bank>/e00003_s00000120_000.png ...     one PNG per image
    <bank>/index.json                       {"format": 1, "entries": [{"file", "epoch", "step"}, ...]}

File names are a function of (epoch, step, i), so replaying a step after a crash or a resume
rewrites the same files instead of adding new ones: a resumed run neither loses nor duplicates
entries. Images are written before the index, both atomically, so the index never names a file
that is missing or half-written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from multifeat.errors import DataError
from multifeat.utils.files import atomic_write_text, ensure_writable_dir
from multifeat.utils.images import save_image

INDEX_NAME = "index.json"
FORMAT_VERSION = 1


def _entry_name(epoch: int, step: int, i: int) -> str:
    return f"e{epoch:05d}_s{step:08d}_{i:03d}.png"


def _read_index(root: Path) -> list[dict]:
    index = root / INDEX_NAME
    try:
        data = json.loads(index.read_text())
        entries = data["entries"]
        if not isinstance(entries, list):
            raise TypeError("entries is not a list")
        for e in entries:
            if not {"file", "epoch", "step"} <= set(e):
                raise KeyError(f"entry {e} lacks file/epoch/step")
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"negative bank index '{index}' is malformed ({e}); expected {{'entries': [...]}}") from e
    return entries


class BankWriter:
    """Adds images to a bank folder (created if needed), idempotently per (epoch, step)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = ensure_writable_dir(root)
        self.entries = _read_index(self.root)
        self._keys = {(e["epoch"], e["step"]) for e in self.entries}

    def __len__(self) -> int:
        return len(self.entries)

    def has(self, epoch: int, step: int) -> bool:
        return (int(epoch), int(step)) in self._keys

    def add(self, images: torch.Tensor, epoch: int, step: int) -> list[str]:
        """Save ``images`` [N,3,H,W] in [-1,1] as entries of (epoch, step); a repeat of a stored
        (epoch, step) is ignored. Returns the file names written."""
        epoch, step = int(epoch), int(step)
        if self.has(epoch, step):
            return []
        names = []
        for i, img in enumerate(images.detach().float().cpu()):
            name = _entry_name(epoch, step, i)
            save_image(img, self.root / name)
            names.append(name)
        new = [{"file": n, "epoch": epoch, "step": step} for n in names]
        entries = self.entries + new
        atomic_write_text(self.root / INDEX_NAME, json.dumps({"format": FORMAT_VERSION, "entries": entries}, indent=1))
        self.entries = entries
        self._keys.add((epoch, step))
        return names


def read_bank(root: str | os.PathLike) -> list[dict]:
    """Entries of a bank folder, each ``{"file", "epoch", "step", "path"}``.

    Raises :class:`DataError` naming the folder when it is missing, has no index, or is empty.
    """
    p = Path(root)
    if not p.is_dir():
        raise DataError(
            f"negative bank folder '{p}' does not exist; run phase 1 first (its NegativeBank callback "
            f"writes the bank) or point bank_dir at an existing bank"
        )
    entries = _read_index(p)
    if not entries:
        raise DataError(f"negative bank folder '{p}' is empty (no entries in {INDEX_NAME}); run phase 1 with the NegativeBank callback first")
    out = []
    for e in entries:
        path = p / e["file"]
        if not path.is_file():
            raise DataError(f"negative bank '{p}': index names '{e['file']}' but the file is missing")
        out.append({**e, "path": str(path)})
    return out
