"""Names shared by every data source, the data warning class, parsing of filters and sizes, and the
train/validation split every data set uses."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from multifeat.errors import ConfigError

#: the package's binary attributes; ``attrs`` vectors follow this order unless a data module is
#: given its own ``attributes`` list.
ATTRIBUTES: tuple[str, ...] = ("bald", "beard", "eyeglasses", "smiling")

class DataWarning(UserWarning):
    """Something in the data was skipped, substituted or resized; training goes on."""


#: Phase-2 sources, ``source`` ids 0..3 in this order.
SOURCE_NAMES: tuple[str, ...] = ("positive", "real_negative", "bank", "degraded")

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "-1", "false", "no", "n", "f"}


def parse_flag(value: object, what: str) -> bool:
    """Read a filter value: ``True``/``False``, ``1``/``-1`` (CelebA style), ``0``, or those as strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (1, 0, -1):
        return value == 1
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{what}: value {value!r} is not a binary flag; use true/false or 1/-1")


def parse_require(require: Mapping[str, object] | None, valid: tuple[str, ...] | list[str], what: str = "require") -> dict[str, bool]:
    """Validate a ``{name: flag}`` filter against the ``valid`` names; returns ``{name: bool}``."""
    if require is None:
        return {}
    if not isinstance(require, Mapping):
        raise ConfigError(f"{what} must be a mapping like {{'bald': true}}, got {type(require).__name__}")
    out = {}
    for name, value in require.items():
        if name not in valid:
            raise ConfigError(f"{what}: unknown attribute '{name}'; valid names: {', '.join(valid)}")
        out[name] = parse_flag(value, f"{what}['{name}']")
    return out


def check_power_of_two(size: object, what: str = "image_size", lo: int = 16, hi: int = 256) -> int:
    """Return ``size`` if it is an int power of two in [lo, hi], else raise :class:`ConfigError`."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise ConfigError(f"{what} must be an integer power of two in [{lo}, {hi}], got {size!r}")
    if size < lo or size > hi or size & (size - 1):
        raise ConfigError(f"{what} must be a power of two in [{lo}, {hi}], got {size}")
    return size


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic random split of ``range(n)`` into (train, val); val gets round(n * val_fraction)
    items, at least one when ``val_fraction > 0`` and ``n >= 2``."""
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])
