"""Which synthesis layers a style ``w`` drives, the named presets, and the style-mixing operation.

A StyleGAN2 generator with output resolution ``R`` reads ``num_ws = 2 * log2(R) - 2`` copies of ``w``
(``ws [N, num_ws, w_dim]``). Walking the synthesis network in order, index ``i`` is read by:

========  ===================================================================================
index     read by
========  ===================================================================================
0         ``b4.conv1``
1         ``b4.torgb`` and ``b8.conv0`` (the 8x8 upsampling convolution)
2k        ``b{4*2^k}.conv1``                               (k >= 1)
2k+1      ``b{4*2^k}.torgb`` and ``b{4*2^(k+1)}.conv0``     (the last index: the final ``torgb`` only)
========  ===================================================================================

Every index therefore gets the *band resolution* ``4 * 2^(i // 2)`` (the block whose ``conv1``/``torgb``
reads it), two indices per resolution, as in the StyleGAN papers. The presets select indices by band:

===========  =================  ====================================================
preset       band resolutions   indices (18 ws at 1024 px / 12 at 128 / 8 at 32 px)
===========  =================  ====================================================
``coarse``   4 - 8              0-3   / 0-3  / 0-3
``middle``   16 - 32            4-7   / 4-7  / 4-7
``fine``     64 and above       8-17  / 8-11 / none (a 32 px generator has no fine layers)
===========  =================  ====================================================

Odd indices also feed the first convolution of the next block, so ``coarse`` (0-3) reaches
``b16.conv0`` too; use explicit layers for other splits.

Mixing semantics (as the official StyleGAN2-ADA code): the *layers from a* take ``a``'s ``w``, every
other layer takes ``b``'s. A cutoff ``K`` means layers ``0..K-1`` from ``a`` and ``K..`` from ``b``::

    ws_mix = ws_a.clone(); ws_mix[:, K:] = ws_b[:, K:]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from multifeat.errors import ConfigError

__all__ = [
    "PRESETS",
    "LayerInfo",
    "band_resolution",
    "layer_mask",
    "layer_table",
    "mix_ws",
    "noise_layer_indices",
    "pair_indices",
    "parse_layers",
    "preset_layers",
    "resolve_layers",
]

#: preset name -> (lowest, highest) band resolution, inclusive (None = unbounded).
PRESETS: dict[str, tuple[int, int | None]] = {"coarse": (4, 8), "middle": (16, 32), "fine": (64, None)}


def band_resolution(index: int) -> int:
    """Band resolution of ws index ``index``: ``4 * 2 ** (index // 2)``."""
    if index < 0:
        raise ConfigError(f"layer index must be >= 0, got {index}")
    return 4 * 2 ** (index // 2)


def preset_layers(preset: str, num_ws: int, resolution: int | None = None) -> list[int]:
    """Indices of preset ``coarse`` / ``middle`` / ``fine`` for a generator with ``num_ws`` ws.

    Raises ``ConfigError`` for an unknown preset or one that selects no layer (e.g. ``fine`` at 32 px).
    """
    key = str(preset).lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    lo, hi = PRESETS[key]
    out = [i for i in range(num_ws) if band_resolution(i) >= lo and (hi is None or band_resolution(i) <= hi)]
    if not out:
        at = f" at {resolution} px" if resolution else ""
        raise ConfigError(
            f"preset '{key}' selects no layer of this generator ({num_ws} ws{at}; '{key}' is band resolutions "
            f"{lo}-{hi or 'max'}); choose another preset or give --cutoff / explicit layers"
        )
    return out


def parse_layers(spec: str | Iterable[int], num_ws: int) -> list[int]:
    """``"0-3,6"`` (or an iterable of ints) -> sorted unique indices, each checked to be < ``num_ws``."""
    if isinstance(spec, str):
        out: set[int] = set()
        for part in spec.replace(" ", "").split(","):
            if not part:
                continue
            try:
                if "-" in part:
                    lo_s, hi_s = part.split("-", 1)
                    lo, hi = int(lo_s), int(hi_s)
                    if hi < lo:
                        raise ValueError
                    out.update(range(lo, hi + 1))
                else:
                    out.add(int(part))
            except ValueError:
                raise ConfigError(f"cannot read layer spec {spec!r}: expected e.g. '0-3,6' (inclusive ranges)") from None
        layers = sorted(out)
    else:
        layers = sorted({int(i) for i in spec})
    bad = [i for i in layers if not 0 <= i < num_ws]
    if bad:
        raise ConfigError(f"layer index {bad[0]} is out of range; this generator has layers 0-{num_ws - 1}")
    return layers


def resolve_layers(
    num_ws: int,
    resolution: int | None = None,
    preset: str | None = None,
    cutoff: int | None = None,
    layers: str | Iterable[int] | None = None,
) -> list[int]:
    """The layers taken from ``a``, from exactly one of ``preset``, ``cutoff`` (``0..K-1``) or ``layers``."""
    given = [name for name, v in (("preset", preset), ("cutoff", cutoff), ("layers", layers)) if v is not None]
    if len(given) != 1:
        raise ConfigError(f"give exactly one of preset, cutoff or layers (got {', '.join(given) or 'none'})")
    if preset is not None:
        return preset_layers(preset, num_ws, resolution)
    if cutoff is not None:
        k = int(cutoff)
        if not 0 <= k <= num_ws:
            raise ConfigError(f"cutoff must be in 0..{num_ws} (layers 0..cutoff-1 come from a), got {cutoff}")
        return list(range(k))
    return parse_layers(layers, num_ws)  # type: ignore[arg-type]


def layer_mask(layers: Sequence[int], num_ws: int, device: torch.device | str | None = None) -> Tensor:
    """Boolean ``[num_ws]``, True on the layers taken from ``a``."""
    m = torch.zeros(num_ws, dtype=torch.bool, device=device)
    if len(layers):
        m[torch.as_tensor(list(layers), dtype=torch.long, device=device)] = True
    return m


def mix_ws(ws_a: Tensor, ws_b: Tensor, from_a: Tensor | Sequence[int]) -> Tensor:
    """Style mixing: ``ws [N, L, C]`` with ``ws_a`` on the layers ``from_a`` and ``ws_b`` elsewhere.

    ``from_a`` is a list of indices, a boolean mask ``[L]`` or ``[N, L]``, or float weights ``[L]`` /
    ``[N, L]`` in [0, 1] (interpolation ``b + alpha * (a - b)`` per layer; 1 = ``a``).
    """
    if ws_a.shape != ws_b.shape or ws_a.ndim != 3:
        raise ConfigError(f"ws_a and ws_b must both be [N, num_ws, w_dim]; got {tuple(ws_a.shape)} and {tuple(ws_b.shape)}")
    num_ws = ws_a.shape[1]
    if not isinstance(from_a, Tensor):
        from_a = layer_mask(list(from_a), num_ws, ws_a.device)
    if from_a.shape[-1] != num_ws:
        raise ConfigError(f"layer selection has {from_a.shape[-1]} entries; the generator has {num_ws} layers")
    sel = from_a.to(ws_a.device)
    sel = sel.unsqueeze(0) if sel.ndim == 1 else sel
    if sel.dtype == torch.bool:
        return torch.where(sel.unsqueeze(-1), ws_a, ws_b)
    return ws_b + sel.unsqueeze(-1).to(ws_a.dtype) * (ws_a - ws_b)


def pair_indices(n_a: int, n_b: int, pairing: str = "zip") -> tuple[Tensor, Tensor]:
    """Index pairs ``(ia, ib)`` of the mixes: ``zip`` pairs i with i (a single image pairs with all),
    ``all`` every combination (a-major order)."""
    if n_a < 1 or n_b < 1:
        raise ConfigError(f"need at least one style on each side, got {n_a} (a) and {n_b} (b)")
    if pairing == "all":
        ia = torch.arange(n_a).repeat_interleave(n_b)
        ib = torch.arange(n_b).repeat(n_a)
        return ia, ib
    if pairing != "zip":
        raise ConfigError(f"pairing must be 'zip' or 'all', got {pairing!r}")
    if n_a == n_b:
        return torch.arange(n_a), torch.arange(n_b)
    if n_a == 1 or n_b == 1:
        n = max(n_a, n_b)
        return torch.arange(n) % n_a, torch.arange(n) % n_b
    raise ConfigError(
        f"pairing 'zip' needs as many a styles as b styles (or one on a side); got {n_a} and {n_b}: "
        "use pairing 'all' for every combination"
    )


@dataclass(frozen=True)
class LayerInfo:
    """One modulated layer of the synthesis network: its name, ws index, resolution and kind."""

    name: str
    w_index: int
    resolution: int
    kind: str  # "conv" or "torgb"
    has_noise: bool


def layer_table(synthesis) -> list[LayerInfo]:
    """Every modulated layer of a StyleGAN2 ``SynthesisNetwork`` with the ws index it reads.

    Follows the network's own indexing (block ``b{res}`` starts at the running index, advances by its
    ``num_conv``; within a block ``conv0``, ``conv1``, ``torgb``). Networks without
    ``block_resolutions`` give an empty table.
    """
    out: list[LayerInfo] = []
    w_idx = 0
    for res in getattr(synthesis, "block_resolutions", []):
        block = getattr(synthesis, f"b{res}")
        i = w_idx
        for name in ("conv0", "conv1", "torgb"):
            layer = getattr(block, name, None)
            if layer is None:
                continue
            kind = "torgb" if name == "torgb" else "conv"
            out.append(LayerInfo(f"b{res}.{name}", i, res, kind, hasattr(layer, "noise_const")))
            i += 1
        w_idx += block.num_conv
    return out


def noise_layer_indices(synthesis) -> dict[str, int]:
    """Name (relative to ``synthesis``) of every layer with a ``noise_const`` buffer -> its ws index."""
    return {info.name: info.w_index for info in layer_table(synthesis) if info.has_noise}
