"""Label-conditional DCGAN-style networks: the conditional-GAN baseline (multi-hot attribute labels).

Shapes: ``G(z, y)``: z [N, z_dim], y [N, A] multi-hot floats in {0, 1} -> images [N, 3, S, S] in
[-1, 1]. ``D(x, y)``: images [N, 3, S, S], y [N, A] -> raw scores [N] (no sigmoid; LSGAN targets 0/1).

Both wrap the plain DCGAN networks of :mod:`multifeat.nets.dcgan` (as ``.net`` / ``.trunk``), so the
conditional baseline has the same convolutional capacity as Method A's G1/D1 and only adds what the
labels need.

**Generator conditioning.** A learned linear embedding ``e(y) = W_e y + b_e`` ([N, embed_dim]) is
concatenated to ``z`` and the result is the input of an unchanged
:class:`~multifeat.nets.dcgan.DCGANGenerator` with ``z_dim + embed_dim`` inputs: the input
conditioning of the original conditional GAN (Mirza & Osindero 2014). It reuses the DCGAN network
as is, and because the label enters linearly the code for an attribute combination is the bias plus
the sum of its attributes' codes, so sampling a combination never seen in training (bald AND beard) is well
defined; whether it yields both features is what the benchmark measures.

Optional (``film=True``, off by default): per-stage label modulation. After every stage of the
DCGAN generator (resolutions 4, 8, ..., S) the feature map is scaled and shifted per channel,
``h <- h * (1 + gamma_r(y)) + beta_r(y)`` with ``gamma_r, beta_r`` linear in ``y`` and zero at
initialisation, in the spirit of the conditional batch normalisation Miyato & Koyama pair with the
projection discriminator, but applied through the generator's stage hook (after the stage's norm +
ReLU). It is off by default because it trained badly: on 32 px synthetic faces (2000 steps, LSGAN,
no norm in D) the generator learned to ignore ``z`` with it (per-pixel std over ``z`` at a fixed
label about 0.01-0.03, against 0.15-0.27 with concatenation only). A likely cause: the
label-dependent shifts dominate the batch statistics of the next batch-norm layer and drown the
noise.

**Projection discriminator** (Miyato & Koyama 2018, "cGANs with projection discriminator"): for a
single class ``c`` the logit is ``psi(phi(x)) + <v_c, phi(x)>``. With multi-hot labels we use a
linear map of the label vector, ``D(x, y) = psi(phi(x)) + <V y, phi(x)>``, i.e. the sum over the
active attributes ``a`` of ``<v_a, phi(x)>``. This is the form the projection argument gives when
the attributes are modelled as independent Bernoulli variables given ``x`` (the log-likelihood
ratio of the data and model label posteriors is linear in ``y``; its ``y``-free normalisers fold
into ``psi``); for a one-hot ``y`` it is exactly the original class-embedding projection.
Here ``phi(x)`` is the DCGAN trunk's final 4x4 feature map flattened to ``[N, C*16]``, ``psi`` is the
DCGAN head (a 4x4 convolution over that map = a linear function of ``phi`` with a bias) and ``V``
is ``[C*16, A]`` (``self.embed.weight``, no bias).
"""

from __future__ import annotations

import torch
from torch import nn

from multifeat.errors import ConfigError
from multifeat.nets.dcgan import DCGANDiscriminator, DCGANGenerator


def _check_num_labels(num_labels: int) -> int:
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ConfigError(f"num_labels must be a positive integer (the number of conditioning attributes), got {num_labels!r}")
    return num_labels


def _check_labels(labels: torch.Tensor, n: int, num_labels: int, who: str) -> torch.Tensor:
    if labels.dim() != 2 or labels.shape[0] != n or labels.shape[1] != num_labels:
        raise ValueError(f"{who}: labels must have shape [{n}, {num_labels}], got {list(labels.shape)}")
    return labels


class ConditionalGenerator(nn.Module):
    """(z, multi-hot labels) -> image: a DCGAN generator fed ``concat(z, W_e y + b_e)`` (see the
    module docstring).

    Args:
        num_labels: ``A``, the length of the multi-hot label vector.
        z_dim: noise dimension (128).
        image_size: output side, a power of two in [16, 256] (64).
        width: channels of the last (full-resolution) stage (64).
        max_width: channel cap of the coarse stages (512).
        norm: ``batch`` (default), ``instance`` or ``none`` — the DCGAN generator's norm.
        embed_dim: size of the label embedding concatenated to ``z`` (32).
        film: add the per-stage label modulation ``h * (1 + gamma_r(y)) + beta_r(y)`` (False; see
            the module docstring for why it is off).
        upsample: ``transpose`` (default) or ``nearest``, the DCGAN generator's upsampling
            (:data:`multifeat.nets.dcgan.UPSAMPLES`).

    ``forward(z [N, z_dim], labels [N, A]) -> [N, 3, image_size, image_size]`` in [-1, 1].
    The wrapped generator is ``self.net`` (its input size is ``z_dim + embed_dim``).
    """

    def __init__(
        self,
        num_labels: int,
        z_dim: int = 128,
        image_size: int = 64,
        width: int = 64,
        max_width: int = 512,
        norm: str = "batch",
        embed_dim: int = 32,
        film: bool = False,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        self.num_labels = _check_num_labels(num_labels)
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
            raise ConfigError(f"embed_dim must be a positive integer, got {embed_dim!r}")
        self.z_dim, self.embed_dim, self.film, self.image_size = z_dim, embed_dim, bool(film), image_size
        self.net = DCGANGenerator(
            z_dim=z_dim + embed_dim, image_size=image_size, width=width, max_width=max_width, norm=norm,
            upsample=upsample,
        )
        self.embed = nn.Linear(num_labels, embed_dim)
        # unit-scale label code, comparable to z ~ N(0, 1) (DCGAN's N(0, 0.02) would drown it in z)
        nn.init.normal_(self.embed.weight, 0.0, 1.0 / num_labels**0.5)
        nn.init.zeros_(self.embed.bias)
        if self.film:
            # one Linear per resolution giving [gamma | beta] for that stage's channels, zero-initialised
            self.modulation = nn.ModuleDict(
                {str(r): nn.Linear(num_labels, 2 * self.net.channels[r]) for r in self.net.resolutions}
            )
            for lin in self.modulation.values():
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z = z.reshape(z.shape[0], -1)
        if z.shape[1] != self.z_dim:
            raise ValueError(f"ConditionalGenerator: z must have shape [N, {self.z_dim}], got {list(z.shape)}")
        y = _check_labels(labels, z.shape[0], self.num_labels, "ConditionalGenerator").to(z.dtype)
        h = torch.cat([z, self.embed(y)], dim=1)
        if not self.film:
            return self.net(h)

        def modulate(res: int, feat: torch.Tensor) -> torch.Tensor:
            gamma, beta = self.modulation[str(res)](y).to(feat.dtype).chunk(2, dim=1)
            return feat * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]

        return self.net(h, hook=modulate)

    def sample_z(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Standard normal noise ``[n, z_dim]``."""
        return torch.randn(n, self.z_dim, generator=generator, device=device)


class ProjectionDiscriminator(nn.Module):
    """(image, multi-hot labels) -> score ``psi(phi(x)) + <V y, phi(x)>`` [N].

    Args:
        num_labels: ``A``, the length of the multi-hot label vector.
        image_size: input side, a power of two in [16, 256] (64).
        width: channels of the first conv; doubles per halving up to ``max_width`` (64, 512).
        norm: ``none`` (default), ``batch`` or ``instance`` in the trunk (after its first layer).
            ``none`` because with batch norm the LSGAN collapsed on 32 px synthetic faces (also
            without labels); it also keeps each score a function of its own image only.

    ``phi(x)``: :meth:`features`, the DCGAN trunk's 4x4 map flattened to ``[N, feature_dim]`` with
    ``feature_dim = C * 16``; ``psi``: the trunk's 4x4 head (linear in ``phi``, with bias);
    ``V``: ``self.embed.weight`` of shape ``[feature_dim, A]``. The wrapped DCGAN discriminator is
    ``self.trunk``.
    """

    def __init__(
        self,
        num_labels: int,
        image_size: int = 64,
        width: int = 64,
        max_width: int = 512,
        norm: str = "none",
    ) -> None:
        super().__init__()
        self.num_labels = _check_num_labels(num_labels)
        self.image_size = image_size
        self.trunk = DCGANDiscriminator(image_size=image_size, width=width, max_width=max_width, norm=norm, out_dim=1)
        self.feature_dim = self.trunk.feature_dim * 16
        self.embed = nn.Linear(num_labels, self.feature_dim, bias=False)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``phi(x)``: [N, 3, S, S] -> [N, feature_dim]."""
        return self.trunk.forward_features(x).flatten(1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, return_parts: bool = False):
        """Score [N]; with ``return_parts=True`` also ``(psi [N], projection [N])``."""
        fmap = self.trunk.forward_features(x)
        y = _check_labels(labels, x.shape[0], self.num_labels, "ProjectionDiscriminator").to(fmap.dtype)
        psi = self.trunk.head(fmap).flatten(1)[:, 0]
        proj = (self.embed(y) * fmap.flatten(1)).sum(dim=1)
        out = psi + proj
        return (out, psi, proj) if return_parts else out
