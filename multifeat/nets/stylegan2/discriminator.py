"""StyleGAN2(-ADA) discriminator with official constructor arguments and state-dict names.

``Discriminator(img [N, C, R, R], c [N, c_dim]) -> logits [N, 1]`` (raw scores; the logistic loss is
applied by the training code). Label conditioning uses the projection discriminator: labels are
mapped to a ``cmap_dim`` vector and the epilogue's ``cmap_dim`` output is dotted with it
(divided by ``sqrt(cmap_dim)``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from multifeat.nets.stylegan2.generator import ARCHITECTURES, MappingNetwork
from multifeat.nets.stylegan2.ops import Conv2dLayer, FullyConnectedLayer, downsample2d, setup_filter


class DiscriminatorBlock(nn.Module):
    """One resolution: (fromrgb) -> conv0 (3x3) -> conv1 (3x3, x2 FIR down) [+ 1x1 down skip]."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first_layer_idx: int,
        architecture: str = "resnet",
        activation: str = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        freeze_layers: int = 0,
    ):
        super().__init__()
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"in_channels must be 0 or tmp_channels ({tmp_channels}), got {in_channels}")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_layers = 0

        def trainable() -> bool:  # layers below ``freeze_layers`` are frozen (stored as buffers)
            idx = self.first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        cl = self.channels_last
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(
                img_channels, tmp_channels, kernel_size=1, activation=activation, trainable=trainable(),
                conv_clamp=conv_clamp, channels_last=cl,
            )
        self.conv0 = Conv2dLayer(
            tmp_channels, tmp_channels, kernel_size=3, activation=activation, trainable=trainable(),
            conv_clamp=conv_clamp, channels_last=cl,
        )
        self.conv1 = Conv2dLayer(
            tmp_channels, out_channels, kernel_size=3, activation=activation, down=2, trainable=trainable(),
            resample_filter=resample_filter, conv_clamp=conv_clamp, channels_last=cl,
        )
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels, out_channels, kernel_size=1, bias=False, down=2, trainable=trainable(),
                resample_filter=resample_filter, channels_last=cl,
            )

    def forward(self, x: Tensor | None, img: Tensor | None, force_fp32: bool = False):
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img


class MinibatchStdLayer(nn.Module):
    """Append the mean (over features and pixels) of the per-group standard deviation.

    The batch is split into groups of ``group_size`` (sample ``i`` belongs to group ``i % (N/G)``);
    ``num_channels`` feature groups each give one extra channel. ``[N, C, H, W] -> [N, C+F, H, W]``.
    """

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g != 0:
            raise ValueError(f"minibatch-std: batch size {n} is not a multiple of the group size {g}")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])  # [N/G, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: (fromrgb) -> minibatch std -> conv 3x3 -> fc -> out (1 or ``cmap_dim``) -> projection."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
            conv_clamp=conv_clamp,
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: Tensor, img: Tensor | None, cmap: Tensor | None, force_fp32: bool = False) -> Tensor:
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """StyleGAN2(-ADA) discriminator.

    Args:
        c_dim: label size (0 = unconditional).
        img_resolution, img_channels: input image size.
        architecture: ``resnet`` (default), ``skip`` or ``orig``.
        channel_base, channel_max: ``min(channel_base // res, channel_max)`` channels at ``res``.
        num_fp16_res: the highest resolutions (but not below 8) run in float16.
        conv_clamp: clamp conv outputs to ``[-conv_clamp, conv_clamp]``.
        cmap_dim: label projection size (default: channels at 4x4).
        block_kwargs: for ``DiscriminatorBlock`` (``activation``, ``freeze_layers``, ...).
        mapping_kwargs: for the label ``MappingNetwork`` (8 layers, lr multiplier 0.01 by default).
        epilogue_kwargs: for ``DiscriminatorEpilogue`` (``mbstd_group_size=4``, ``mbstd_num_channels=1``).
    """

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        block_kwargs: dict | None = None,
        mapping_kwargs: dict | None = None,
        epilogue_kwargs: dict | None = None,
    ):
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 8, got {img_resolution}")
        block_kwargs = dict(block_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        self.init_kwargs = copy.deepcopy(
            dict(
                c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, architecture=architecture,
                channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res,
                conv_clamp=conv_clamp, cmap_dim=cmap_dim, block_kwargs=block_kwargs,
                mapping_kwargs=mapping_kwargs, epilogue_kwargs=epilogue_kwargs,
            )
        )
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim
        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0, channels[res], channels[res // 2], resolution=res,
                first_layer_idx=layer_idx, use_fp16=(res >= fp16_resolution), **block_kwargs, **common,
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs
            )
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common)

    def forward(self, img: Tensor, c: Tensor | None = None, **block_kwargs) -> Tensor:
        """``img [N, C, R, R]``, ``c [N, c_dim]`` -> logits ``[N, 1]`` (float32). ``force_fp32`` optional."""
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(
                f"images must be [N, {self.img_channels}, {self.img_resolution}, {self.img_resolution}], "
                f"got {tuple(img.shape)}"
            )
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap, **block_kwargs)
