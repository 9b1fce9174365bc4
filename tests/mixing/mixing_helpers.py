"""Small generators and classifiers whose behaviour is known exactly, for the mixing tests."""

from __future__ import annotations

import torch
from torch import nn

from multifeat.nets.stylegan2 import Generator

FIXTURE = "stylegan2ada/stylegan2ada_tiny_reference.pt"


def tiny_generator(seed: int = 0, resolution: int = 16) -> Generator:
    """A freshly initialised StyleGAN2 generator (z = w = 32, 2 mapping layers, few channels)."""
    torch.manual_seed(seed)
    g = Generator(32, 0, 32, resolution, 3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=128, channel_max=16))
    return g.eval()


class _PixelMapping(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, num_ws: int):
        super().__init__()
        self.num_ws = num_ws
        g = torch.Generator().manual_seed(123)
        self.A = nn.Parameter(torch.randn(z_dim, w_dim, generator=g) / z_dim**0.5)

    def forward(self, z, c=None, truncation_psi: float = 1.0, **kwargs):
        return (truncation_psi * (z @ self.A)).unsqueeze(1).repeat(1, self.num_ws, 1)


class _PixelSynthesis(nn.Module):
    def __init__(self, num_ws: int, w_dim: int, resolution: int):
        super().__init__()
        self.num_ws, self.w_dim, self.resolution = num_ws, w_dim, resolution

    def forward(self, ws, noise_mode: str = "const", **kwargs):
        n = ws.shape[0]
        flat = 0.5 * ws.reshape(n, -1)
        img = torch.zeros(n, self.resolution * self.resolution, dtype=ws.dtype, device=ws.device)
        img = torch.cat([flat, img[:, flat.shape[1]:]], dim=1)
        return img.view(n, 1, self.resolution, self.resolution).repeat(1, 3, 1, 1)


class PixelGenerator(nn.Module):
    """A "generator" that draws its styles: pixel ``l * w_dim + j`` of every channel is ``0.5 * ws[:, l, j]``.

    Mapping: ``w = z @ A`` (fixed random ``A``), copied to every layer. No noise layers. Classifiers
    reading given pixels therefore read given layers' styles exactly.
    """

    def __init__(self, num_ws: int = 8, w_dim: int = 4, resolution: int = 8, z_dim: int = 6):
        super().__init__()
        assert num_ws * w_dim <= resolution * resolution
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, 0, w_dim, num_ws
        self.img_resolution, self.img_channels = resolution, 3
        self.mapping = _PixelMapping(z_dim, w_dim, num_ws)
        self.synthesis = _PixelSynthesis(num_ws, w_dim, resolution)


def layer_pixels(images: torch.Tensor, layers, w_dim: int) -> torch.Tensor:
    """``[N, len(layers) * w_dim]`` pixel values of the given layers in a PixelGenerator image (channel 0)."""
    flat = images[:, 0].flatten(1)
    idx = torch.cat([torch.arange(k * w_dim, (k + 1) * w_dim) for k in layers])
    return flat[:, idx]


class LayerMeanClassifier:
    """``p = sigmoid(sign * k * mean of the pixels of ``layers``)`` for PixelGenerator images."""

    def __init__(self, layers, w_dim: int = 4, k: float = 10.0, sign: float = 1.0):
        self.layers, self.w_dim, self.k, self.sign = list(layers), w_dim, k, sign

    def __call__(self, images):
        return torch.sigmoid(self.sign * self.k * layer_pixels(images, self.layers, self.w_dim).mean(dim=1))


class LinearWClassifier:
    """``p = sigmoid(k * (0.5 * w . u + b))`` reading layer 0's style from a PixelGenerator image."""

    def __init__(self, u: torch.Tensor, bias: float = 0.0, k: float = 20.0, w_dim: int = 4):
        self.u, self.bias, self.k, self.w_dim = u.float(), bias, k, w_dim

    def __call__(self, images):
        return torch.sigmoid(self.k * (layer_pixels(images, [0], self.w_dim) @ self.u + self.bias))
