"""GPEN: GAN-prior embedded network for blind face restoration (Yang et al. 2021, arXiv:2105.06070).

A U-shaped network: a down-sampling encoder turns the degraded face into a style code and a pyramid
of feature maps; a StyleGAN2 generator ("GAN prior") decodes the code, and each of its styled
convolutions receives the encoder's feature map of the same resolution where StyleGAN2 would inject
noise. The features are *concatenated* to the activations (scaled by the learned scalar
``noise.weight``), so every styled convolution outputs twice its nominal channel count.

``GPEN(size, style_dim, n_mlp, channel_multiplier=2, blur_kernel=(1,3,3,1), lr_mlp=0.01,
isconcat=True, narrow=1.0)`` takes the constructor arguments of the released models and has exactly
their ``state_dict`` names and shapes, so the released weight files (e.g. ``GPEN-BFR-512.pth``:
size 512, style_dim 512, n_mlp 8, channel_multiplier 2, narrow 1, 71,005,223 parameters) load with
``strict=True``.

Structure (``log_size = log2(size)``, ``ch(r)`` = channel count at resolution r, see
:func:`gpen_channels`):

* ``ecd0``: 1x1 conv (3 -> ch(size)) + bias + leaky ReLU; ``ecd1 .. ecd{log_size-2}``: blur
  [1,3,3,1] + 3x3 stride-2 conv + bias + leaky ReLU, halving the resolution down to 4x4.
* ``final_linear``: the flattened 4x4 features -> ``style_dim`` (+ leaky ReLU).
* ``generator``: the StyleGAN2 generator: mapping network (pixel norm + ``n_mlp`` equalised
  linear layers with learning-rate multiplier ``lr_mlp``), constant 4x4 input, styled convolutions
  with modulation/demodulation and feature concatenation, ToRGB skip outputs with upsampling.

Leaky ReLUs are "fused" ones: ``leaky_relu(x + bias, 0.2) * sqrt(2)``. Every layer uses equalised
learning rate (weights stored at unit variance, scaled by ``1/sqrt(fan_in)`` at run time).
Input and output are RGB in [-1, 1] at ``size x size``; ``forward`` does not clamp the output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multifeat.nets.stylegan2 import ops

__all__ = ["GPEN", "gpen_channels", "fused_leaky_relu"]


# ----------------------------------------------------------------------------------------------
# Elementary operations: the shared StyleGAN2 ops (plain PyTorch, differentiable, any device).


def fused_leaky_relu(x: Tensor, bias: Tensor) -> Tensor:
    """``leaky_relu(x + bias, 0.2) * sqrt(2)`` with ``bias`` [C] added along dimension 1."""
    return ops.bias_act(x, bias, act="lrelu")


def _make_kernel(k: Sequence[float]) -> Tensor:
    t = torch.tensor(k, dtype=torch.float32)
    if t.ndim == 1:
        t = t[None, :] * t[:, None]
    return t / t.sum()


def gpen_channels(channel_multiplier: int = 2, narrow: float = 1.0) -> dict[int, int]:
    """Channel count per resolution: 512 up to 32x32, then 256, 128, 64, 32, 16 times ``channel_multiplier``;
    everything times ``narrow`` (rounded down)."""
    base = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
        2048: 8 * channel_multiplier,
    }
    return {r: int(c * narrow) for r, c in base.items()}


# ----------------------------------------------------------------------------------------------
# Layers (parameter names follow the released checkpoints).


class PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class Blur(nn.Module):
    """FIR low-pass ``kernel`` (buffer, normalised to sum ``upsample_factor**2``) with padding ``pad``."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        self.kernel_spec = (tuple(kernel), upsample_factor**2)
        self.register_buffer("kernel", _make_kernel(kernel) * upsample_factor**2)
        self.pad = pad

    @torch.no_grad()
    def reset_kernel(self) -> None:
        """Refill the (fixed, not learned) kernel buffer, e.g. after ``to_empty``."""
        taps, gain = self.kernel_spec
        self.kernel.copy_(_make_kernel(taps) * gain)

    def forward(self, x: Tensor) -> Tensor:
        p0, p1 = self.pad
        return ops.upfirdn2d(x, self.kernel, padding=[p0, p1, p0, p1])


class Upsample(nn.Module):
    """2x upsampling: zero insertion + FIR ``kernel`` (buffer, sums to ``factor**2``)."""

    def __init__(self, kernel: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.kernel_spec = (tuple(kernel), factor**2)
        self.register_buffer("kernel", _make_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    reset_kernel = Blur.reset_kernel

    def forward(self, x: Tensor) -> Tensor:
        p0, p1 = self.pad
        return ops.upfirdn2d(x, self.kernel, up=self.factor, padding=[p0, p1, p0, p1])


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate: ``weight`` [O, I, k, k] ~ N(0, 1), scaled by 1/sqrt(I k k)."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate and learning-rate multiplier ``lr_mul``.

    ``weight`` [out, in] is stored divided by ``lr_mul`` and used times ``lr_mul / sqrt(in)``;
    ``bias`` is used times ``lr_mul``. ``activation="fused_lrelu"`` adds a fused leaky ReLU.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return ops.bias_act(F.linear(x, self.weight * self.scale), bias, act="lrelu")
        return F.linear(x, self.weight * self.scale, bias=bias)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class ConvLayer(nn.Sequential):
    """[blur +] equalised conv (stride 2 when ``downsample``) + fused leaky ReLU (bias lives there)."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        downsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = len(blur_kernel) - 2 + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(
            EqualConv2d(in_channel, out_channel, kernel_size, stride=stride, padding=padding, bias=False)
        )
        layers.append(FusedLeakyReLU(out_channel))
        super().__init__(*layers)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution: per-sample weights ``w * scale * s_in`` (+ demodulation).

    ``weight`` [1, O, I, k, k]; ``modulation``: style [B, style_dim] -> s [B, I] (bias init 1).
    ``upsample``: transposed conv with stride 2, then a [1,3,3,1] blur (gain 4).
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        styles = self.modulation(style)  # [B, I]
        weight = self.weight[0] * self.scale  # [O, I, k, k]
        if self.upsample:
            # transposed conv (stride 2) + the blur filter; ops applies the gain 4 itself
            f = self.blur.kernel / self.blur.kernel_spec[1]
            return ops.modulated_conv2d(
                x, weight, styles, demodulate=self.demodulate, up=2, padding=self.padding, resample_filter=f
            )
        return ops.modulated_conv2d(x, weight, styles, demodulate=self.demodulate, padding=self.padding)


class NoiseInjection(nn.Module):
    """Adds (or, with ``isconcat``, concatenates along channels) ``weight * noise``; ``weight`` [1]."""

    def __init__(self, isconcat: bool = True) -> None:
        super().__init__()
        self.isconcat = isconcat
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, x.shape[1] if self.isconcat else 1, h, w).normal_()
        if self.isconcat:
            return torch.cat([x, self.weight * noise], dim=1)
        return x + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated conv -> feature/noise injection -> fused leaky ReLU (2*out channels when concatenating)."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        demodulate: bool = True,
        isconcat: bool = True,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel,
            out_channel,
            kernel_size,
            style_dim,
            demodulate=demodulate,
            upsample=upsample,
            blur_kernel=blur_kernel,
        )
        self.noise = NoiseInjection(isconcat)
        self.activate = FusedLeakyReLU(out_channel * 2 if isconcat else out_channel)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) + bias, plus the upsampled previous RGB (skip)."""

    def __init__(
        self,
        in_channel: int,
        style_dim: int,
        upsample: bool = True,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class StyleGAN2Decoder(nn.Module):
    """The StyleGAN2 generator inside GPEN (``state_dict`` prefix ``generator.``)."""

    def __init__(
        self,
        size: int,
        style_dim: int,
        n_mlp: int,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        lr_mlp: float = 0.01,
        isconcat: bool = True,
        narrow: float = 1.0,
    ) -> None:
        super().__init__()
        self.size, self.style_dim = size, style_dim
        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        mult = 2 if isconcat else 1
        self.channels = ch = gpen_channels(channel_multiplier, narrow)
        self.style = nn.Sequential(
            PixelNorm(),
            *[
                EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu")
                for _ in range(n_mlp)
            ],
        )
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur_kernel, isconcat=isconcat)
        self.to_rgb1 = ToRGB(ch[4] * mult, style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channel = ch[4]
        for i in range(3, self.log_size + 1):
            out_channel = ch[2**i]
            self.convs.append(
                StyledConv(
                    in_channel * mult,
                    out_channel,
                    3,
                    style_dim,
                    upsample=True,
                    blur_kernel=blur_kernel,
                    isconcat=isconcat,
                )
            )
            self.convs.append(
                StyledConv(
                    out_channel * mult, out_channel, 3, style_dim, blur_kernel=blur_kernel, isconcat=isconcat
                )
            )
            self.to_rgbs.append(ToRGB(out_channel * mult, style_dim, blur_kernel=blur_kernel))
            in_channel = out_channel

    def forward(
        self,
        style: Tensor,
        noise: Sequence[Tensor | None],
        truncation: float = 1.0,
        truncation_latent: Tensor | None = None,
        input_is_latent: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """``style`` [B, style_dim] (z-like, or w if ``input_is_latent``); ``noise``: ``num_layers`` maps
        (coarse to fine: 4, 8, 8, 16, 16, ...). Returns (image [B, 3, size, size], latent [B, n_latent, style_dim])."""
        w = style if input_is_latent else self.style(style)
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (the mean w)")
            w = truncation_latent + truncation * (w - truncation_latent)
        latent = w.unsqueeze(1).repeat(1, self.n_latent, 1)
        out = self.input(latent.shape[0])
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_up, conv, n_up, n, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs
        ):
            out = conv_up(out, latent[:, i], noise=n_up)
            out = conv(out, latent[:, i + 1], noise=n)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip, latent


class GPEN(nn.Module):
    """GPEN face restorer (the released ``FullGenerator``): degraded face -> restored face.

    Args:
        size: image side (power of two >= 8), e.g. 512 for ``GPEN-BFR-512``.
        style_dim: width of the style code (512 in the released models).
        n_mlp: depth of the mapping network (8).
        channel_multiplier: channel multiplier of the high resolutions (2).
        blur_kernel: FIR kernel of the resampling filters ([1, 3, 3, 1]).
        lr_mlp: learning-rate multiplier of the mapping network (0.01).
        isconcat: concatenate encoder features (True) instead of adding them.
        narrow: width multiplier of every layer (1.0).

    ``forward(x [B, 3, size, size] in [-1, 1]) -> (image [B, 3, size, size], latent [B, n_latent, style_dim])``
    where ``n_latent = 2 log2(size) - 2``; the image is not clamped.
    """

    def __init__(
        self,
        size: int,
        style_dim: int,
        n_mlp: int,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        lr_mlp: float = 0.01,
        isconcat: bool = True,
        narrow: float = 1.0,
    ) -> None:
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"GPEN size must be a power of two >= 8, got {size}")
        self.config = dict(
            size=size,
            style_dim=style_dim,
            n_mlp=n_mlp,
            channel_multiplier=channel_multiplier,
            blur_kernel=list(blur_kernel),
            lr_mlp=lr_mlp,
            isconcat=isconcat,
            narrow=narrow,
        )
        self.size = size
        self.log_size = int(math.log2(size))
        ch = gpen_channels(channel_multiplier, narrow)
        self.generator = StyleGAN2Decoder(
            size,
            style_dim,
            n_mlp,
            channel_multiplier=channel_multiplier,
            blur_kernel=blur_kernel,
            lr_mlp=lr_mlp,
            isconcat=isconcat,
            narrow=narrow,
        )
        self.names = [f"ecd{i}" for i in range(self.log_size - 1)]
        self.ecd0 = nn.Sequential(ConvLayer(3, ch[size], 1))
        in_channel = ch[size]
        for i in range(self.log_size, 2, -1):
            out_channel = ch[2 ** (i - 1)]
            setattr(
                self,
                self.names[self.log_size - i + 1],
                nn.Sequential(
                    ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
                ),
            )
            in_channel = out_channel
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 4 * 4, style_dim, activation="fused_lrelu"))

    def reset_fir_kernels(self) -> None:
        """Refill every FIR kernel buffer (fixed values) — needed after ``to_empty`` from the meta device."""
        for m in self.modules():
            if isinstance(m, (Blur, Upsample)):
                m.reset_kernel()

    def encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Returns (style code [B, style_dim], encoder features fine to coarse: size, size/2, ..., 4)."""
        feats = []
        for name in self.names:
            x = getattr(self, name)(x)
            feats.append(x)
        return self.final_linear(x.flatten(1)), feats

    def forward(
        self,
        x: Tensor,
        truncation: float = 1.0,
        truncation_latent: Tensor | None = None,
        input_is_latent: bool = False,
    ) -> tuple[Tensor, Tensor]:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != self.size or x.shape[3] != self.size:
            raise ValueError(
                f"GPEN({self.size}) expects images [B, 3, {self.size}, {self.size}], got {tuple(x.shape)}"
            )
        code, feats = self.encode(x)
        # One map per styled conv, coarse to fine: the 4x4 features feed conv1; every finer
        # resolution feeds its two convs (upsampling conv and the following one).
        coarse_to_fine = feats[::-1]
        noise = [coarse_to_fine[0]] + [f for f in coarse_to_fine[1:] for _ in range(2)]
        return self.generator(
            code,
            noise,
            truncation=truncation,
            truncation_latent=truncation_latent,
            input_is_latent=input_is_latent,
        )
