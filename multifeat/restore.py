"""Optional face restoration applied to generated images before they are saved or evaluated.

A :class:`Restorer` maps a batch of RGB images ``[B, 3, H, W]`` in [-1, 1] (any H, W) to restored
images of the same shape, in [-1, 1]. A restorer that works at a fixed resolution (GPEN) resizes its
input to that resolution with antialiased bicubic interpolation, restores it, and resizes the result
back the same way; non-square images are stretched to a square and back.

* :class:`IdentityRestorer` — returns the images unchanged (``--restore none``).
* :class:`GPENRestorer` — the GPEN blind face restoration network (:mod:`multifeat.nets.gpen`) with
  weights the user supplies, e.g. the released ``GPEN-BFR-512.pth`` (``--restore gpen
  --restore-weights PATH``). Nothing is downloaded. GPEN was trained on aligned face crops (FFHQ
  alignment); generated face images are already such crops.

Weight files accepted by :meth:`GPENRestorer.from_weights` (read with ``torch.load(weights_only=True)``,
so no code in the file runs):

* a raw ``state_dict`` as released (keys ``ecd0.0.0.weight``, ``final_linear.0.weight``,
  ``generator.style.1.weight``, ...);
* a dict holding such a state dict under one of the keys ``params_ema``, ``g_ema``, ``state_dict``,
  ``params``, ``model`` (first match wins);
* either of the above with every key prefixed by ``module.`` (saved from ``DataParallel``/DDP).

The network configuration (size, style_dim, n_mlp, channel_multiplier, narrow, isconcat) is inferred
from the tensor shapes; ``lr_mlp`` (0.01) and ``blur_kernel`` ([1, 3, 3, 1]) cannot be and take the
released values unless given.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multifeat.errors import CheckpointError, ConfigError
from multifeat.nets.gpen import GPEN

__all__ = [
    "Restorer",
    "IdentityRestorer",
    "GPENRestorer",
    "build_restorer",
    "infer_gpen_config",
    "load_gpen_state_dict",
    "RESTORERS",
]

RESTORERS = ("none", "identity", "gpen")
_WRAPPER_KEYS = ("params_ema", "g_ema", "state_dict", "params", "model")


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)


class Restorer(nn.Module):
    """Base class: ``forward(images [B, 3, H, W] in [-1, 1]) -> [B, 3, H, W] in [-1, 1]``.

    Subclasses with a fixed working resolution set ``size`` and implement :meth:`restore` for images
    of exactly ``size x size``; :meth:`forward` does the resizing, batching (``batch_size`` images at a
    time), device moves and clamping, without gradients.
    """

    size: int | None = None

    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"restorer batch_size={batch_size!r} must be >= 1")
        self.batch_size = batch_size

    def restore(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"{type(self).__name__} expects RGB images [B, 3, H, W], got {tuple(images.shape)}"
            )
        h, w = images.shape[-2:]
        dev = self._device()
        outs = []
        for chunk in images.split(self.batch_size):
            x = chunk.to(dev, torch.float32)
            if self.size is not None:
                x = _resize(x, (self.size, self.size)).clamp(-1, 1)
            y = self.restore(x).float()
            y = _resize(y, (h, w)) if self.size is not None else y
            outs.append(y.clamp(-1, 1).to(images.device, images.dtype))
        return torch.cat(outs) if outs else images.clone()


class IdentityRestorer(Restorer):
    """Leaves the images as they are (``forward`` returns its input)."""

    def forward(self, images: Tensor) -> Tensor:  # type: ignore[override]
        return images

    def restore(self, images: Tensor) -> Tensor:
        return images


class GPENRestorer(Restorer):
    """GPEN face restoration around a :class:`multifeat.nets.gpen.GPEN` network (kept in eval mode)."""

    def __init__(self, net: GPEN, batch_size: int = 8) -> None:
        super().__init__(batch_size=batch_size)
        self.net = net.eval().requires_grad_(False)
        self.size = net.size

    def train(self, mode: bool = True) -> GPENRestorer:
        super().train(mode)
        self.net.eval()
        return self

    def restore(self, images: Tensor) -> Tensor:
        return self.net(images)[0]

    @classmethod
    def from_weights(
        cls,
        path: str | os.PathLike,
        size: int | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        **config: Any,
    ) -> GPENRestorer:
        """Load GPEN weights from ``path`` (see the module docstring for the accepted layouts).

        ``size`` (optional) is checked against the size inferred from the weights; ``config`` sets
        constructor arguments of :class:`GPEN` that cannot be inferred (``lr_mlp``, ``blur_kernel``)
        or overrides inferred ones. Raises :class:`multifeat.errors.CheckpointError` when the file is
        missing, unreadable or does not fit the architecture.
        """
        state = load_gpen_state_dict(path)
        cfg = infer_gpen_config(state, path)
        if size is not None and int(size) != cfg["size"]:
            raise CheckpointError(
                f"GPEN weights {path}: they are for {cfg['size']}x{cfg['size']} images "
                f"but size={size} was requested"
            )
        cfg.update(config)
        with torch.device("meta"):
            net = GPEN(**cfg)
        _check_keys(net, state, path, cfg)
        net = net.to_empty(device=device)
        net.reset_fir_kernels()  # files that omit the fixed FIR kernels still load
        net.load_state_dict(state, strict=False)  # keys and shapes were checked above
        return cls(net, batch_size=batch_size)


def load_gpen_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a GPEN weight file weights-only and return the bare state dict (wrappers and ``module.`` removed)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            f"GPEN weights file not found: {p} (download the released model, e.g. "
            "GPEN-BFR-512.pth, and pass its path)"
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is the user's file
        raise CheckpointError(f"cannot read GPEN weights {p}: {type(e).__name__}: {e}") from e
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        kind = (
            type(obj).__name__
            if not isinstance(obj, Mapping)
            else f"dict with keys {sorted(map(str, obj))[:8]}"
        )
        raise CheckpointError(
            f"GPEN weights {p}: expected a state dict of tensors (raw, or under one of "
            f"{list(_WRAPPER_KEYS)}), got {kind}"
        )
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def infer_gpen_config(
    state: Mapping[str, Tensor], path: str | os.PathLike = "<state dict>"
) -> dict[str, Any]:
    """Infer GPEN constructor arguments from parameter shapes.

    Returns ``size, style_dim, n_mlp, channel_multiplier, narrow, isconcat`` (plus the released
    ``lr_mlp=0.01`` and ``blur_kernel=[1, 3, 3, 1]``).
    """
    required = [
        "final_linear.0.weight",
        "generator.input.input",
        "generator.conv1.conv.weight",
        "generator.conv1.activate.bias",
    ]
    absent = [k for k in required if k not in state]
    if absent:
        raise CheckpointError(
            f"GPEN weights {path}: not a GPEN state dict, missing keys {absent} "
            f"(first keys in the file: {list(state)[:5]})"
        )
    n_ecd = len({m.group(1) for k in state if (m := re.match(r"ecd(\d+)\.", k))})
    n_mlp = len({m.group(1) for k in state if (m := re.match(r"generator\.style\.(\d+)\.weight$", k))})
    if n_ecd < 2:
        raise CheckpointError(f"GPEN weights {path}: found {n_ecd} encoder blocks ecdN, expected at least 2")
    size = 2 ** (n_ecd + 1)
    style_dim = int(state["final_linear.0.weight"].shape[0])
    ch4 = int(state["generator.input.input"].shape[1])
    narrow = ch4 / 512
    isconcat = int(state["generator.conv1.activate.bias"].shape[0]) == 2 * int(
        state["generator.conv1.conv.weight"].shape[1]
    )
    channel_multiplier = 2
    key64 = "generator.convs.6.conv.weight"  # first conv at 64x64
    if size >= 64 and key64 in state:
        channel_multiplier = max(1, round(int(state[key64].shape[1]) / (256 * narrow)))
    return dict(
        size=size,
        style_dim=style_dim,
        n_mlp=n_mlp,
        channel_multiplier=channel_multiplier,
        blur_kernel=[1, 3, 3, 1],
        lr_mlp=0.01,
        isconcat=isconcat,
        narrow=narrow,
    )


def _check_keys(
    net: nn.Module, state: Mapping[str, Tensor], path: str | os.PathLike, cfg: Mapping[str, Any]
) -> None:
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(".kernel")]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(
                f"missing keys {missing[:5]}" + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            )
        if unexpected:
            parts.append(
                f"unexpected keys {unexpected[:5]}"
                + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else "")
            )
        if wrong:
            parts.append(
                f"shape mismatches {wrong[:5]}" + (f" (+{len(wrong) - 5} more)" if len(wrong) > 5 else "")
            )
        shown = {k: v for k, v in cfg.items() if k != "blur_kernel"}
        raise CheckpointError(
            f"GPEN weights {path} do not match the GPEN architecture {shown}: " + "; ".join(parts)
        )


def build_restorer(
    name: str | None,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    size: int | None = None,
    batch_size: int = 8,
) -> Restorer:
    """Restorer by name: ``"none"``/``"identity"`` (or None) -> :class:`IdentityRestorer`;
    ``"gpen"`` -> :meth:`GPENRestorer.from_weights` (``weights`` required)."""
    key = (name or "none").lower()
    if key in ("none", "identity"):
        return IdentityRestorer(batch_size=batch_size)
    if key == "gpen":
        if not weights:
            raise ConfigError(
                "--restore gpen needs --restore-weights PATH (a GPEN weight file such as "
                "GPEN-BFR-512.pth, downloaded by you)"
            )
        return GPENRestorer.from_weights(weights, size=size, device=device, batch_size=batch_size)
    raise ConfigError(f"unknown restorer {name!r}; expected one of {list(RESTORERS)}")
