"""MemoryCache: decode every image of a real dataset once and serve it from memory as uint8.

Real images (CelebA, folders) are 8-bit files: decoding a JPEG, cropping and resizing it costs far
more than a training step needs to wait for, and a small set (a few hundred bald faces) pays that
cost again every epoch. When the decoded set fits in ``cache_mb`` mebibytes, the data modules decode
it once (through a ``DataLoader`` with their ``num_workers``), keep ``uint8 [N, 3, S, S]`` and turn
each batch back into floats in [-1, 1] on the fly; batches are then served in the main process,
so no worker processes have to start or drain at epoch boundaries.

The cached items are exactly the dataset's items: an image ``x`` in [-1, 1] made from 8-bit values
``u`` (``x = u / 127.5 - 1``) is stored as ``u = round((x + 1) * 127.5)`` and rebuilt with the same
float operations. Filling checks this on every image and refuses a dataset whose images are not
8-bit (:class:`~multifeat.errors.DataError`).
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, Dataset

from multifeat.errors import ConfigError, DataError

_MIB = 1 << 20


def check_cache_mb(value: object) -> int:
    """``cache_mb`` must be an integer >= 0 (0: never cache)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"cache_mb must be an integer >= 0 (mebibytes of decoded images kept in memory; 0: no cache), got {value!r}")
    return value


def cache_bytes(n: int, image_size: int) -> int:
    """Bytes that ``n`` decoded RGB uint8 images of side ``image_size`` take."""
    return int(n) * 3 * int(image_size) ** 2


def fmt_mib(n_bytes: int) -> str:
    return f"{n_bytes / _MIB:.1f} MiB"


class MemoryCache(Dataset):
    """Every item of ``base`` decoded once; images kept as uint8, other tensor fields as they are.

    Args:
        base: a dataset whose items are dicts with an ``"image"`` float [3,S,S] in [-1,1] made from
            8-bit values, plus any tensor or number fields (``attrs``, ``index``, ...).
        num_workers: worker processes used to decode the items once (0: the calling process).
        batch_size: decoding batch size.

    Attributes: ``images`` uint8 [N,3,S,S], ``fields`` the other fields stacked, ``seconds`` the
    time the fill took, ``nbytes`` the images' size.
    """

    def __init__(self, base: Dataset, num_workers: int = 0, batch_size: int = 256) -> None:
        self.base = base
        n = len(base)
        if n == 0:
            raise DataError("cannot cache an empty dataset")
        t0 = time.perf_counter()
        loader = DataLoader(base, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            persistent_workers=False)
        images: list[torch.Tensor] = []
        fields: dict[str, list[torch.Tensor]] = {}
        for batch in loader:
            x = batch["image"]
            u = (x + 1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
            if not torch.equal(u.float().div_(127.5).sub_(1.0), x):
                raise DataError(f"{type(base).__name__} yields images that are not 8-bit values scaled to [-1, 1]; "
                                "they cannot be cached as uint8 (set cache_mb: 0)")
            images.append(u)
            for k, v in batch.items():
                if k != "image":
                    fields.setdefault(k, []).append(torch.as_tensor(v))
        self.images = torch.cat(images)
        self.fields = {k: torch.cat(v) for k, v in fields.items()}
        self.seconds = time.perf_counter() - t0
        self.nbytes = self.images.numel()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        img = self.images.index_select(0, idx).float().div_(127.5).sub_(1.0)
        cols = {k: v.index_select(0, idx) for k, v in self.fields.items()}
        out = []
        for j in range(len(indices)):
            item = {"image": img[j]}
            for k, v in cols.items():
                item[k] = v[j].item() if v.dim() == 1 and k == "index" else v[j]
            out.append(item)
        return out

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([int(index)])[0]

    def __getattr__(self, name: str):  # the base dataset's helpers (files, labels, ...)
        if name in ("base", "images", "fields", "seconds", "nbytes"):
            raise AttributeError(name)
        return getattr(self.base, name)


class CacheableDataset(Dataset):
    """A dataset of decoded files that :func:`attach_cache` can serve from memory.

    Subclasses implement :meth:`read_item` (decode item ``i`` from disk); indexing serves the
    :class:`MemoryCache` in ``memory`` when one is attached and reads the file otherwise.
    """

    #: a :class:`MemoryCache` of this dataset's items (see :func:`attach_cache`), or None
    memory = None

    def read_item(self, i: int) -> dict:
        raise NotImplementedError

    def __getitems__(self, indices: list[int]) -> list[dict]:
        if self.memory is not None:
            return self.memory.__getitems__(indices)
        return [self[i] for i in indices]

    def __getitem__(self, index: int) -> dict:
        i = int(index)
        if self.memory is not None:
            return self.memory[i]
        return self.read_item(i)


def attach_cache(ds: Dataset, num_workers: int = 0) -> MemoryCache:
    """Decode ``ds`` (a :class:`~multifeat.data.celeba.CelebADataset` or
    :class:`~multifeat.data.folder.ImageFolderDataset`) into a :class:`MemoryCache` that the dataset
    itself then serves from: its type, files and labels stay as they are."""
    ds.memory = None
    cache = MemoryCache(ds, num_workers=num_workers)
    ds.memory = cache
    return cache
