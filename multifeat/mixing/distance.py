"""Image distances for projection and for judging reconstructions: pluggable, never downloaded.

Every distance is an ``nn.Module`` with ``forward(x, y) -> [N]`` (per-image distance, images
``[N, 3, H, W]`` in [-1, 1], differentiable) and a ``name`` that every report repeats.

* ``lpips`` (the default; name ``lpips-vgg``) — :class:`VGGPerceptualDistance` with the LPIPS linear
  calibration weights, the perceptual distance the official StyleGAN2-ADA projector uses:
  torchvision's VGG16 features at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 of inputs shifted
  and scaled as LPIPS does, each feature unit-normalised over channels, squared differences weighted
  per channel by LPIPS' learned ``lin0..lin4`` 1x1 layers, averaged over positions and summed over the
  five layers (images larger than 256 px are area-downsampled to 256 first, as the official projector
  does).
* ``vgg16-features`` — the same without LPIPS' learned weights (every channel weight 1); only when
  asked for by name.
* ``pixel`` (name ``pixel-gradient``) — :class:`PixelGradientDistance`, needs no weights: at scales
  1, 1/2, 1/4, ... (down to 8 px) the mean squared difference of the pixels plus that of their
  horizontal and vertical finite differences (edges), averaged over scales.

Weights are only ever read from local files, from where the ecosystem keeps them:

* VGG16: torchvision's ``vgg16-397923af.pth`` in the torch hub cache
  (``torch.hub.get_dir()/checkpoints/``, where torchvision downloads it on a machine with internet),
  or an explicit ``vgg_weights`` path;
* LPIPS: ``weights/v0.1/vgg.pth`` shipped inside the ``lpips`` package (optional dependency,
  ``pip install lpips``; found without importing it), or an explicit ``lpips_weights`` path.

When the LPIPS distance is asked for and a file is missing, :func:`build_distance` raises
:class:`LPIPSWeightsMissingError` naming each missing file, where it would come from, and the
``pixel`` alternative; it never switches to another distance by itself. The former names stay
accepted: ``auto`` and ``lpips-vgg`` mean ``lpips``, ``pixel-gradient`` means ``pixel``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multifeat.errors import CheckpointError, ConfigError

__all__ = [
    "DISTANCE_ALIASES",
    "DISTANCE_KINDS",
    "LPIPSWeightsMissingError",
    "PixelGradientDistance",
    "VGGPerceptualDistance",
    "build_distance",
    "distance_weight_files",
    "find_local_lpips_weights",
    "find_local_vgg_weights",
    "vgg16_features",
]

#: The distances by kind; ``lpips`` is the default.
DISTANCE_KINDS = ("lpips", "pixel", "vgg16-features")
#: Former names, still accepted.
DISTANCE_ALIASES = {"auto": "lpips", "lpips-vgg": "lpips", "pixel-gradient": "pixel"}

#: torchvision VGG16 ``features`` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG_TAPS = (3, 8, 15, 22, 29)
#: LPIPS input normalisation of [-1, 1] images (its "scaling layer").
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
_VGG_FILE = "vgg16-397923af.pth"
_LPIPS_FILE = ("weights", "v0.1", "vgg.pth")


class LPIPSWeightsMissingError(CheckpointError):
    """The LPIPS distance was asked for but its VGG16 and/or LPIPS weight files are not on this machine."""


class PixelGradientDistance(nn.Module):
    """Multi-scale pixel + finite-difference (edge) mean squared distance, ``[N]``. Needs no weights.

    Args:
        min_size: the coarsest scale used (default 8 px).
        gradient_weight: weight of the edge term relative to the pixel term (default 1).
    """

    name = "pixel-gradient"

    def __init__(self, min_size: int = 8, gradient_weight: float = 1.0):
        super().__init__()
        self.min_size = int(min_size)
        self.gradient_weight = float(gradient_weight)

    @property
    def description(self) -> str:
        return (f"pixel-gradient: mean over scales (down to {self.min_size} px) of pixel MSE + "
                f"{self.gradient_weight:g} x finite-difference MSE (no learned weights)")

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _check_pair(x, y)
        terms = []
        while True:
            d = x - y
            t = d.square().mean(dim=(1, 2, 3))
            if d.shape[-1] > 1:
                t = t + self.gradient_weight * (d[..., :, 1:] - d[..., :, :-1]).square().mean(dim=(1, 2, 3))
            if d.shape[-2] > 1:
                t = t + self.gradient_weight * (d[..., 1:, :] - d[..., :-1, :]).square().mean(dim=(1, 2, 3))
            terms.append(t)
            if min(x.shape[-2:]) // 2 < self.min_size:
                break
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        return torch.stack(terms).mean(dim=0)


class VGGPerceptualDistance(nn.Module):
    """LPIPS-style distance on torchvision VGG16 features (weights from local files only).

    Args:
        vgg_weights: path of a torchvision VGG16 state dict (``features.*`` keys, classifier keys ignored;
            keys without the ``features.`` prefix are accepted too).
        lpips_weights: optional path of LPIPS' ``vgg.pth`` (``lin{k}.model.1.weight`` ``[1, C_k, 1, 1]``);
            without it every channel has weight 1 (name ``vgg16-features``).
        max_size: larger images are area-downsampled to this side first (default 256).
    """

    def __init__(self, vgg_weights: str | os.PathLike, lpips_weights: str | os.PathLike | None = None, max_size: int = 256):
        super().__init__()
        features = vgg16_features()
        sd = _load_state_dict(vgg_weights, "VGG16 weights")
        own = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.") or k[:1].isdigit()}
        own = {k: v for k, v in own.items() if int(k.split(".")[0]) <= _VGG_TAPS[-1]}
        expected = features.state_dict()
        if set(own) != set(expected) or any(own[k].shape != expected[k].shape for k in expected):
            raise CheckpointError(
                f"'{vgg_weights}' is not a torchvision VGG16 state dict (expected keys like 'features.0.weight' "
                f"of shape {tuple(expected['0.weight'].shape)}; found {sorted(sd)[:4]}...)"
            )
        features.load_state_dict(own)
        self.features = features.eval().requires_grad_(False)
        channels = [features[i - 1].out_channels for i in _VGG_TAPS]
        if lpips_weights is not None:
            lsd = _load_state_dict(lpips_weights, "LPIPS weights")
            lins = []
            for k, c in enumerate(channels):
                key = f"lin{k}.model.1.weight"
                w = lsd.get(key)
                if w is None or tuple(w.shape) != (1, c, 1, 1):
                    raise CheckpointError(
                        f"'{lpips_weights}' is not LPIPS' VGG weight file: key '{key}' of shape (1, {c}, 1, 1) "
                        f"is {'missing' if w is None else f'of shape {tuple(w.shape)}'}"
                    )
                lins.append(w.reshape(c).float())
            self.name = "lpips-vgg"
        else:
            lins = [torch.ones(c) for c in channels]
            self.name = "vgg16-features"
        for k, w in enumerate(lins):
            self.register_buffer(f"lin{k}", w)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1))
        self.max_size = int(max_size)
        self.sources = {"vgg": str(vgg_weights), "lpips": None if lpips_weights is None else str(lpips_weights)}

    @property
    def description(self) -> str:
        if self.name == "lpips-vgg":
            return f"lpips-vgg: LPIPS on VGG16 features (VGG {self.sources['vgg']}, LPIPS {self.sources['lpips']})"
        return f"vgg16-features: LPIPS-style VGG16 feature distance with unit channel weights (VGG {self.sources['vgg']})"

    def train(self, mode: bool = True) -> VGGPerceptualDistance:
        super().train(mode)
        self.features.eval()  # fixed network
        return self

    def _taps(self, x: Tensor) -> list[Tensor]:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if max(x.shape[-2:]) > self.max_size:
            x = F.interpolate(x, size=(self.max_size, self.max_size), mode="area")
        h = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _VGG_TAPS:
                out.append(h / (h.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _check_pair(x, y)
        total = x.new_zeros(x.shape[0])
        for k, (fx, fy) in enumerate(zip(self._taps(x), self._taps(y))):
            w = getattr(self, f"lin{k}").view(1, -1, 1, 1)
            total = total + ((fx - fy).square() * w).sum(dim=1).mean(dim=(1, 2))
        return total


#: VGG16 ("configuration D") convolution widths, "M" = 2x2 max-pooling; torchvision's layer order.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` up to relu5_3 (indices 0-29, same module indices, so its
    ``features.*`` state-dict keys load), built without the classifier."""
    layers: list[nn.Module] = []
    c = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            c = int(v)
    return nn.Sequential(*layers)


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ConfigError(f"a distance compares two image batches [N, C, H, W] of equal shape; got {tuple(x.shape)} and {tuple(y.shape)}")


def _load_state_dict(path: str | os.PathLike, what: str) -> dict[str, Tensor]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what} file '{p}' does not exist (weights are never downloaded; give a local file)")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {what} '{p}': not a PyTorch state dict ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{what} '{p}' does not hold a state dict (name -> tensor)")
    return sd


def find_local_vgg_weights() -> Path | None:
    """torchvision's VGG16 weight file if it is already in the torch hub cache (nothing is downloaded)."""
    p = Path(torch.hub.get_dir()) / "checkpoints" / _VGG_FILE
    return p if p.is_file() else None


def find_local_lpips_weights() -> Path | None:
    """LPIPS' VGG linear weights if the ``lpips`` package is installed (its bundled file), else None.

    The package is located, never imported."""
    import importlib.util

    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root).joinpath(*_LPIPS_FILE)
        if p.is_file():
            return p
    return None


def _lpips_package_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("lpips") is not None


def _missing_weights_message(what: str, missing_vgg: bool, missing_lpips: bool) -> str:
    items = []
    if missing_vgg:
        items.append(
            f"  - VGG16 ImageNet weights '{_VGG_FILE}': not in the torch hub cache "
            f"({Path(torch.hub.get_dir()) / 'checkpoints' / _VGG_FILE}). torchvision downloads it there on a machine "
            "with internet (torchvision.models.vgg16(weights='IMAGENET1K_V1')); copy it to that path, or give its "
            "path with --vgg-weights PATH (vgg_weights=...)."
        )
    if missing_lpips:
        where = ("the installed 'lpips' package does not contain it" if _lpips_package_installed() else
                 "the 'lpips' package, which ships this file, is not installed (pip install lpips==0.1.4, or the "
                 "'lpips' extra of multifeat)")
        items.append(
            f"  - LPIPS linear calibration weights '{'/'.join(_LPIPS_FILE)}': {where}; or give its path with "
            "--lpips-weights PATH (lpips_weights=...)."
        )
    return (
        f"the perceptual distance {what} needs weight files that are not on this machine (nothing is downloaded):\n" + "\n".join(items) + "\n"
        "Or choose the weight-free pixel + image-gradient distance: --perceptual pixel (distance='pixel')."
    )


def build_distance(
    kind: str | nn.Module = "lpips",
    vgg_weights: str | os.PathLike | None = None,
    lpips_weights: str | os.PathLike | None = None,
) -> nn.Module:
    """The distance named ``kind`` (see :data:`DISTANCE_KINDS` / :data:`DISTANCE_ALIASES`), or ``kind``
    itself if it is a module.

    ``lpips``: VGG16 from ``vgg_weights`` or the torch hub cache, LPIPS' linear layers from
    ``lpips_weights`` or the installed ``lpips`` package; raises :class:`LPIPSWeightsMissingError`
    (naming every missing file) when either is not found. ``vgg16-features`` needs only VGG16.
    ``pixel`` needs nothing. Explicit paths that do not exist raise ``CheckpointError``.
    """
    if isinstance(kind, nn.Module):
        if not hasattr(kind, "name"):
            kind.name = type(kind).__name__  # type: ignore[attr-defined]
        return kind
    name = str(kind).lower()
    name = DISTANCE_ALIASES.get(name, name)
    if name not in DISTANCE_KINDS:
        raise ConfigError(
            f"unknown perceptual distance {kind!r}; choose one of {', '.join(DISTANCE_KINDS)} "
            f"(former names {', '.join(DISTANCE_ALIASES)} are accepted too)"
        )
    if name == "pixel":
        return PixelGradientDistance()
    vgg, lp = distance_weight_files(name, vgg_weights, lpips_weights)
    return VGGPerceptualDistance(vgg, lp)


def distance_weight_files(
    kind: str,
    vgg_weights: str | os.PathLike | None = None,
    lpips_weights: str | os.PathLike | None = None,
) -> tuple[Path | None, Path | None]:
    """The (VGG16, LPIPS) weight files the distance ``kind`` needs, found without loading them (None
    where it needs none); raises :class:`LPIPSWeightsMissingError` naming each missing file."""
    name = DISTANCE_ALIASES.get(str(kind).lower(), str(kind).lower())
    if name == "pixel":
        return None, None
    vgg = Path(vgg_weights) if vgg_weights is not None else find_local_vgg_weights()
    if name == "vgg16-features":
        if vgg is None:
            raise LPIPSWeightsMissingError(_missing_weights_message("'vgg16-features'", True, False))
        return vgg, None
    lp = Path(lpips_weights) if lpips_weights is not None else find_local_lpips_weights()
    if vgg is None or lp is None:
        raise LPIPSWeightsMissingError(_missing_weights_message(
            "'lpips' (LPIPS on VGG16, as the official projector uses)", vgg is None, lp is None))
    return vgg, lp
