"""DCGAN-style generator and discriminator for square images of 16-256 px (Method A: G1/D1, G3, D3).

Shapes: ``G(z)``: z [N, z_dim] -> images [N, 3, S, S] in [-1, 1] (tanh).
``D(x)``: images [N, 3, S, S] -> raw scores [N] (no sigmoid: the LSGAN losses regress them to 0/1).

The generator starts from a 4x4 map and doubles the resolution ``log2(S) - 2`` times. Its stages are
addressed by resolution (4, 8, ..., S) so later phases can grow it: ``forward(z, hook=...)`` calls
``hook(resolution, h)`` after every stage and continues with what the hook returns. Phase 3 inserts
its added residual blocks and the AdaIN combination that way without copying the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

NORMS = ("batch", "instance", "none")
#: how the generator doubles its resolution: ``transpose`` (DCGAN: a 4x4 transposed convolution of
#: stride 2) or ``nearest`` (nearest-neighbour x2, then a 3x3 convolution; Odena et al. 2016, "Deconvolution
#: and checkerboard artifacts": no uneven overlap, so no checkerboard to unlearn)
UPSAMPLES = ("transpose", "nearest")


def check_image_size(image_size: int, name: str = "image_size", lo: int = 16, hi: int = 256) -> int:
    """Validate a square power-of-two image size in [lo, hi]."""
    from multifeat.errors import ConfigError

    if not isinstance(image_size, int) or isinstance(image_size, bool):
        raise ConfigError(f"{name} must be an integer power of two in [{lo}, {hi}], got {image_size!r}")
    if image_size < lo or image_size > hi or image_size & (image_size - 1):
        raise ConfigError(f"{name} must be a power of two in [{lo}, {hi}], got {image_size}")
    return image_size


def check_upsample(kind: object, name: str = "upsample") -> str:
    """Validate a generator's upsampling kind (:data:`UPSAMPLES`)."""
    from multifeat.errors import ConfigError

    if kind not in UPSAMPLES:
        raise ConfigError(f"{name} must be one of {', '.join(UPSAMPLES)}, got {kind!r}")
    return str(kind)


def norm_layer(kind: str, channels: int) -> nn.Module:
    from multifeat.errors import ConfigError

    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm must be one of {NORMS}, got {kind!r}")


def _channels(width: int, max_width: int, level: int) -> int:
    return int(min(max_width, width * 2**level))


class DCGANGenerator(nn.Module):
    """z -> image. ``width`` is the channel count at the output resolution; it doubles per halving,
    capped at ``max_width``.

    Args:
        z_dim: noise dimension.
        image_size: output side, a power of two in [16, 256].
        width: channels of the last (full-resolution) stage.
        max_width: channel cap for the coarse stages.
        norm: ``batch`` (DCGAN default), ``instance`` or ``none``.
        out_channels: image channels (3).
        upsample: ``transpose`` (DCGAN default) or ``nearest`` (see :data:`UPSAMPLES`). The two hold
            different weights: a checkpoint loads into a generator of its own kind only.
    """

    def __init__(
        self,
        z_dim: int = 128,
        image_size: int = 64,
        width: int = 64,
        max_width: int = 512,
        norm: str = "batch",
        out_channels: int = 3,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        check_image_size(image_size)
        check_upsample(upsample)
        self.z_dim, self.image_size, self.width, self.max_width, self.norm = z_dim, image_size, width, max_width, norm
        self.upsample = upsample
        self.num_up = int(math.log2(image_size)) - 2
        c0 = _channels(width, max_width, self.num_up)
        self.stem = nn.Sequential(
            nn.ConvTranspose2d(z_dim, c0, 4, 1, 0, bias=norm == "none"), norm_layer(norm, c0), nn.ReLU(inplace=True)
        )
        self.resolutions = [4 * 2**i for i in range(self.num_up + 1)]  # 4, 8, ..., image_size
        self.channels = {4: c0}
        ups = []
        c_in = c0
        for i in range(self.num_up):
            c_out = _channels(width, max_width, self.num_up - 1 - i)
            if upsample == "transpose":
                grow: list[nn.Module] = [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=norm == "none")]
            else:
                grow = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=norm == "none")]
            ups.append(nn.Sequential(*grow, norm_layer(norm, c_out), nn.ReLU(inplace=True)))
            self.channels[self.resolutions[i + 1]] = c_out
            c_in = c_out
        self.ups = nn.ModuleList(ups)
        self.to_rgb = nn.Conv2d(c_in, out_channels, 3, 1, 1)
        init_dcgan_(self)

    def forward(self, z: torch.Tensor, hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        h = self.stem(z.view(z.shape[0], self.z_dim, 1, 1))
        if hook is not None:
            h = hook(4, h)
        for res, up in zip(self.resolutions[1:], self.ups):
            h = up(h)
            if hook is not None:
                h = hook(res, h)
        return torch.tanh(self.to_rgb(h))

    def sample_z(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=generator, device=device)


class DCGANDiscriminator(nn.Module):
    """image -> score [N] (or [N, out_dim] when ``out_dim > 1``). Stride-2 convs with LeakyReLU(0.2),
    no normalisation on the first layer (DCGAN), a final 4x4 conv.

    Args:
        image_size: input side, power of two in [16, 256].
        width: channels of the first (full-resolution) layer; doubles per halving up to ``max_width``.
        norm: ``batch``, ``instance`` or ``none`` (after the first layer).
        in_channels: image channels (3).
        out_dim: number of outputs.
    """

    def __init__(
        self,
        image_size: int = 64,
        width: int = 64,
        max_width: int = 512,
        norm: str = "batch",
        in_channels: int = 3,
        out_dim: int = 1,
    ) -> None:
        super().__init__()
        check_image_size(image_size)
        self.image_size, self.width, self.max_width, self.norm, self.out_dim = image_size, width, max_width, norm, out_dim
        n_down = int(math.log2(image_size)) - 2
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(n_down):
            c_out = _channels(width, max_width, i)
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=(i == 0 or norm == "none")))
            if i > 0:
                layers.append(norm_layer(norm, c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.feature_dim = c_in
        self.head = nn.Conv2d(c_in, out_dim, 4, 1, 0)
        init_dcgan_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 4x4 feature map before the head: [N, feature_dim, 4, 4]."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x)).flatten(1)
        return out[:, 0] if self.out_dim == 1 else out


def init_dcgan_(module: nn.Module) -> nn.Module:
    """DCGAN initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module
