"""Capturing and restoring every random state a training run draws from.

A state is a plain dict of tensors, ints and lists (so a checkpoint holding it still loads with
``torch.load(weights_only=True)``)::

    {"torch": ByteTensor, "cuda": [ByteTensor, ...] (only when CUDA is initialised),
     "numpy": {"keys": LongTensor [624], "pos": int, "has_gauss": int, "cached_gaussian": float},
     "python": [version, [625 ints], gauss_next or None],
     "loaders": [ByteTensor, ...]}   # the torch.Generator of each training DataLoader/sampler, in order

``loaders`` covers the generators a ``DataLoader`` draws its order and worker seeds from
(``loader.generator``, ``loader.sampler.generator``, ``loader.batch_sampler.sampler.generator``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


def loader_generators(loaders: Iterable[Any]) -> list[torch.Generator]:
    """The distinct ``torch.Generator`` objects of ``loaders`` (DataLoaders), in a fixed order."""
    found: list[torch.Generator] = []
    seen: set[int] = set()
    for dl in loaders:
        batch_sampler = getattr(dl, "batch_sampler", None)
        candidates = (
            getattr(dl, "generator", None),
            getattr(getattr(dl, "sampler", None), "generator", None),
            getattr(getattr(batch_sampler, "sampler", None), "generator", None),
        )
        for g in candidates:
            if isinstance(g, torch.Generator) and id(g) not in seen:
                seen.add(id(g))
                found.append(g)
    return found


def capture(loaders: Iterable[Any] = ()) -> dict[str, Any]:
    """The current global random states and those of the loaders' generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": [int(version), [int(v) for v in internal], gauss_next],
        "loaders": [g.get_state() for g in loader_generators(loaders)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global(state: dict[str, Any]) -> None:
    """Set the torch (CPU, CUDA), numpy and python random states from ``state``."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    n = state["numpy"]
    np.random.set_state((n.get("kind", "MT19937"), n["keys"].numpy().astype(np.uint32), int(n["pos"]),
                         int(n["has_gauss"]), float(n["cached_gaussian"])))
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss_next))


def restore(state: dict[str, Any], loaders: Iterable[Any] = (), loaders_too: bool = True) -> bool:
    """Restore the global states and (``loaders_too``) the loaders' generators.

    Returns False, leaving the loader generators as they are, when the number of generators differs
    from the saved one (the data set-up changed); the global states are restored in any case.
    """
    restore_global(state)
    if not loaders_too:
        return True
    gens = loader_generators(loaders)
    saved = state.get("loaders") or []
    if len(gens) != len(saved):
        return False
    for g, s in zip(gens, saved):
        g.set_state(s.cpu())
    return True
