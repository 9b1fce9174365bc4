"""Low-level StyleGAN2 operations in plain PyTorch (no custom CUDA/C++ kernels).

Everything here runs on CPU and GPU, in float32, bfloat16 and float16, and under ``torch.autocast``.
The numerical conventions are those of the official StyleGAN2-ADA networks, so that official weights
give the official images:

* FIR filters are normalised to sum 1 (``setup_filter``); ``upfirdn2d`` *convolves* with them (the
  filter is flipped before the correlation that ``conv2d`` performs) unless ``flip_filter=True``.
* Paddings are given as ``[x_before, x_after, y_before, y_after]`` (an int pads all four sides; a pair
  ``(px, py)`` pads both sides of each axis); negative values crop.
* ``bias_act`` multiplies the activation output by the activation's default gain (``sqrt(2)`` for
  ``relu``/``lrelu``, 1 otherwise) unless ``gain`` is given, then clamps to ``[-clamp, clamp]``.
* Weights of ``conv2d_resample`` / ``modulated_conv2d`` are ``[out, in/groups, kh, kw]``;
  ``flip_weight=True`` is a plain cross-correlation (``torch.nn.functional.conv2d``), ``False`` a
  true convolution (kernel flipped).

Public API (also used by the GPEN network; keep it stable):
``setup_filter``, ``upfirdn2d``, ``upsample2d``, ``downsample2d``, ``filter2d``, ``bias_act``,
``conv2d_resample``, ``modulated_conv2d``, ``normalize_2nd_moment`` and the equalised-learning-rate
layers ``FullyConnectedLayer`` and ``Conv2dLayer``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "Conv2dLayer",
    "FullyConnectedLayer",
    "bias_act",
    "conv2d_resample",
    "downsample2d",
    "filter2d",
    "modulated_conv2d",
    "normalize_2nd_moment",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]

# name -> (default alpha, default gain)
ACTIVATIONS: dict[str, tuple[float, float]] = {
    "linear": (0.0, 1.0),
    "relu": (0.0, math.sqrt(2)),
    "lrelu": (0.2, math.sqrt(2)),
    "tanh": (0.0, 1.0),
    "sigmoid": (0.0, 1.0),
}


# ----------------------------------------------------------------------------------------------
# FIR filtering


def setup_filter(
    f: Sequence[float] | Tensor | None = (1, 3, 3, 1),
    device: torch.device | str | None = None,
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1.0,
    separable: bool | None = None,
) -> Tensor:
    """Turn filter taps into the float32 tensor ``upfirdn2d`` expects.

    Args:
        f: 1-D taps (e.g. ``[1, 3, 3, 1]``), a 2-D kernel, a scalar or ``None`` (identity ``[1]``).
        normalize: divide by the sum of all taps (the 2-D kernel of ``[1,3,3,1]`` sums to 1).
        flip_filter: store the filter flipped.
        gain: overall gain applied to the 2-D response (``sqrt(gain)`` per axis for 1-D filters).
        separable: keep a 1-D filter separable (1-D result). Default: only for 1-D filters of 8 taps or
            more, as the official implementation does; shorter ones become the outer product ``f f^T``.

    Returns:
        ``[fw]`` (separable) or ``[fh, fw]`` float32 tensor.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f"a FIR filter must be a scalar, 1-D or 2-D, got shape {tuple(f.shape)}")
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def _filter_size(f: Tensor | None) -> tuple[int, int]:
    """(width, height) of a filter; ``None`` is the 1x1 identity."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"a FIR filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    return int(f.shape[-1]), int(f.shape[0])


def _parse_scale(s: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(s, int):
        sx = sy = s
    else:
        sx, sy = (int(v) for v in s)
    if sx < 1 or sy < 1:
        raise ValueError(f"up/down factors must be >= 1, got {s}")
    return sx, sy


def _parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        return padding[0], padding[1], padding[2], padding[3]
    raise ValueError(f"padding must be an int, (px, py) or [x0, x1, y0, y1], got {padding}")


def _pad_or_crop(x: Tensor, px0: int, px1: int, py0: int, py1: int) -> Tensor:
    """Zero-pad (positive) or crop (negative) the last two dims."""
    if max(px0, px1, py0, py1) > 0:
        x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    if min(px0, px1, py0, py1) < 0:
        h, w = x.shape[-2], x.shape[-1]
        x = x[..., max(-py0, 0) : h - max(-py1, 0), max(-px0, 0) : w - max(-px1, 0)]
    return x


def upfirdn2d(
    x: Tensor,
    f: Tensor | None,
    up: int | Sequence[int] = 1,
    down: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> Tensor:
    """Upsample by zero insertion, pad, FIR-filter, downsample — per channel.

    Equivalent to: insert ``up-1`` zeros after every input sample (so the signal has ``H*up`` rows),
    zero-pad/crop by ``padding``, convolve (valid) with ``f * gain`` and keep every ``down``-th sample.
    Implemented with depthwise (grouped) ``conv_transpose2d`` for the upsampling and strided depthwise
    ``conv2d`` for the filtering/downsampling, separably for 1-D filters.

    Args:
        x: ``[N, C, H, W]``.
        f: ``[fh, fw]`` or separable ``[fw]`` filter from ``setup_filter``; ``None`` = identity.
        up, down: integer factors (or ``(x, y)`` pairs).
        padding: ``int``, ``(px, py)`` or ``[x0, x1, y0, y1]`` applied after upsampling.
        flip_filter: correlate instead of convolve.
        gain: overall gain (e.g. ``up**2`` keeps the mean after zero insertion).

    Returns:
        ``[N, C, (H*up + py0 + py1 - fh) // down + 1, (W*up + px0 + px1 - fw) // down + 1]``.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [N, C, H, W], got shape {tuple(x.shape)}")
    upx, upy = _parse_scale(up)
    downx, downy = _parse_scale(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    fw, fh = _filter_size(f)
    c = x.shape[1]
    f = (f * (gain ** (f.ndim / 2))).to(device=x.device, dtype=x.dtype)

    # conv_transpose2d performs a true convolution and conv2d a correlation: orient the taps so that
    # the overall operation is a convolution with ``f`` unless ``flip_filter``.
    def kernel(taps: Tensor, shape: tuple[int, int], for_transpose: bool) -> Tensor:
        if for_transpose == flip_filter:
            taps = taps.flip(list(range(taps.ndim)))
        return taps.reshape(1, 1, *shape).repeat(c, 1, 1, 1)

    if f.ndim == 2:
        steps = [(f, (fh, fw), (upy, upx), (downy, downx))]
    else:  # separable: horizontal pass, then vertical pass
        steps = [(f, (1, fw), (1, upx), (1, downx)), (f, (fw, 1), (upy, 1), (downy, 1))]

    if upx == 1 and upy == 1:
        x = _pad_or_crop(x, px0, px1, py0, py1)
        for taps, shape, _, stride in steps:
            x = F.conv2d(x, kernel(taps, shape, False), stride=stride, groups=c)
        return x

    # With upsampling: conv_transpose2d(stride=up) = zero insertion followed by a *full* convolution;
    # shift the result to the requested padding (zero insertion appends up-1 trailing zeros).
    for i, (taps, shape, stride, _) in enumerate(steps):
        x = F.conv_transpose2d(x, kernel(taps, shape, True), stride=stride, groups=c)
        if f.ndim == 1:
            if i == 0:
                x = _pad_or_crop(x, px0 - fw + 1, px1 + upx - fw, 0, 0)
            else:
                x = _pad_or_crop(x, 0, 0, py0 - fw + 1, py1 + upy - fw)
        else:
            x = _pad_or_crop(x, px0 - fw + 1, px1 + upx - fw, py0 - fh + 1, py1 + upy - fh)
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


def filter2d(
    x: Tensor, f: Tensor | None, padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1.0
) -> Tensor:
    """FIR-filter ``x`` keeping its size (padding ``fw//2`` etc. is added to the given ``padding``)."""
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(
    x: Tensor,
    f: Tensor | None,
    up: int | Sequence[int] = 2,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> Tensor:
    """FIR upsampling: ``[N,C,H,W] -> [N,C,H*up,W*up]`` (plus ``padding``); keeps the mean (gain ``up^2``)."""
    upx, upy = _parse_scale(up)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(
    x: Tensor,
    f: Tensor | None,
    down: int | Sequence[int] = 2,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> Tensor:
    """FIR downsampling: ``[N,C,H,W] -> [N,C,H/down,W/down]`` (plus ``padding``)."""
    downx, downy = _parse_scale(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain)


# ----------------------------------------------------------------------------------------------
# Bias + activation


def bias_act(
    x: Tensor,
    b: Tensor | None = None,
    act: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
    alpha: float | None = None,
    dim: int = 1,
) -> Tensor:
    """``clamp(act(x + b) * gain, -clamp, clamp)``.

    Args:
        x: any shape; ``b`` (``[x.shape[dim]]``) is broadcast along ``dim`` (default 1, channels).
        act: ``linear``, ``relu``, ``lrelu``, ``tanh`` or ``sigmoid``.
        gain: output scale; ``None`` = the activation's default (``sqrt(2)`` for relu/lrelu, else 1).
        clamp: clamp the result to ``[-clamp, clamp]`` after the gain; ``None`` = no clamp.
        alpha: negative slope of ``lrelu``; ``None`` = 0.2.
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    def_alpha, def_gain = ACTIVATIONS[act]
    alpha = def_alpha if alpha is None else float(alpha)
    gain = def_gain if gain is None else float(gain)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    if act == "relu":
        x = F.relu(x)
    elif act == "lrelu":
        x = F.leaky_relu(x, alpha)
    elif act == "tanh":
        x = torch.tanh(x)
    elif act == "sigmoid":
        x = torch.sigmoid(x)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Scale ``x`` to unit mean square along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ----------------------------------------------------------------------------------------------
# Convolution with FIR resampling


def _conv(
    x: Tensor,
    w: Tensor,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    transpose: bool = False,
    flip_weight: bool = True,
) -> Tensor:
    if not flip_weight:
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: Tensor,
    w: Tensor,
    f: Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> Tensor:
    """2-D convolution with optional FIR up/downsampling, in the cheapest equivalent order.

    Equivalent to ``upfirdn2d(x, f, up=up, padding=p, gain=up**2)`` followed by a (valid) convolution
    with ``w`` and ``upfirdn2d(., f, down=down)``, where ``p`` is ``padding`` enlarged by the filter's
    support. With ``padding = k//2`` the output is ``[N, out, H*up/down, W*up/down]``.

    Args:
        x: ``[N, in, H, W]``; w: ``[out, in/groups, kh, kw]``; f: filter from ``setup_filter``.
        flip_weight: ``True`` = cross-correlation (``F.conv2d``), ``False`` = true convolution.
    """
    if not (isinstance(up, int) and isinstance(down, int) and up >= 1 and down >= 1):
        raise ValueError(f"up and down must be integers >= 1, got up={up}, down={down}")
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    pad = [px0, px1, py0, py1]

    if kw == 1 and kh == 1 and down > 1 and up == 1:  # 1x1 conv after downsampling: fewer pixels
        x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:  # 1x1 conv before upsampling
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=pad, gain=up**2, flip_filter=flip_filter)
    if down > 1 and up == 1:  # filter, then strided conv
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:  # strided transposed conv, then filter
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        # the transposed conv convolves; a correlation with w is a convolution with w flipped
        x = _conv(x, wt, stride=up, padding=(pyt, pxt), groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(
            x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2, flip_filter=flip_filter
        )
        if down > 1:  # the padding for it was added above
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x
    # no resampling
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=(py0, px0), groups=groups, flip_weight=flip_weight)
    x = _pad_or_crop(x, px0, px1, py0, py1)
    return _conv(x, w, groups=groups, flip_weight=flip_weight)


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    demodulate: bool = True,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    resample_filter: Tensor | None = None,
    noise: Tensor | None = None,
    fused: bool = True,
    flip_weight: bool | None = None,
    flip_filter: bool = False,
) -> Tensor:
    """StyleGAN2 weight modulation / demodulation.

    Per sample ``n``: ``w_n[o,i] = weight[o,i] * styles[n,i]``, demodulated to unit L2 norm over
    ``(i, kh, kw)`` (plus 1e-8) if ``demodulate``; then ``conv2d_resample(x_n, w_n)`` and ``+ noise``.

    Args:
        x: ``[N, in, H, W]``; weight: ``[out, in, kh, kw]``; styles: ``[N, in]``.
        noise: broadcastable to the output ``[N, out, H', W']`` (e.g. ``[N, 1, H', W']``), added last.
        fused: one grouped convolution with the batch folded into the groups (per-sample weights);
            ``False`` scales the activations instead (cheaper backward in training). Same result.
        flip_weight: see ``conv2d_resample``; ``None`` = ``up == 1`` (the official layers' choice).

    Returns:
        ``[N, out, H', W']`` in ``x.dtype``.
    """
    if x.ndim != 4 or weight.ndim != 4 or styles.ndim != 2:
        raise ValueError(
            f"modulated_conv2d expects x [N,C,H,W], weight [O,I,kh,kw], styles [N,I]; got "
            f"{tuple(x.shape)}, {tuple(weight.shape)}, {tuple(styles.shape)}"
        )
    n = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if styles.shape != (n, in_channels) or x.shape[1] != in_channels:
        raise ValueError(
            f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)} and styles "
            f"{tuple(styles.shape)} disagree on batch size / input channels"
        )
    if flip_weight is None:
        flip_weight = up == 1

    # float16 activations: pre-scale weight and styles (the demodulation undoes it) to avoid overflow
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.abs().amax(dim=1, keepdim=True)

    w = None
    dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]

    if not fused:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(
            x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
            flip_weight=flip_weight, flip_filter=flip_filter,
        )
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    if demodulate:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(
        x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=n,
        flip_weight=flip_weight, flip_filter=flip_filter,
    )
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


# ----------------------------------------------------------------------------------------------
# Equalised-learning-rate layers (official parameter names: weight, bias, resample_filter)


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate: ``act(x @ (W*g).T + b*lr_multiplier)``.

    ``weight`` ``[out, in]`` is initialised ``N(0, 1) / lr_multiplier`` and used times
    ``g = lr_multiplier / sqrt(in_features)``; ``bias`` ``[out]`` starts at ``bias_init``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        """``[N, in] -> [N, out]``."""
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Convolution with equalised learning rate, optional FIR up/down (x2) and bias + activation.

    ``forward(x, gain=1)``: ``[N, in, H, W] -> [N, out, H*up/down, W*up/down]``; the activation gain is
    multiplied by ``gain`` and the output clamped to ``conv_clamp * gain`` if ``conv_clamp`` is set.
    ``trainable=False`` registers weight and bias as buffers (frozen layers; same state-dict names).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        channels_last: bool = False,
        trainable: bool = True,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATIONS[activation][1]
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        b = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(b) if b is not None else None
        else:
            self.register_buffer("weight", weight)
            if b is not None:
                self.register_buffer("bias", b)
            else:
                self.bias = None

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = self.weight * self.weight_gain
        x = conv2d_resample(
            x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down, padding=self.padding,
            flip_weight=(self.up == 1),
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, "
            f"up={self.up}, down={self.down}"
        )
