"""Adaptive discriminator augmentation (ADA) of StyleGAN2-ADA (Karras et al. 2020, arXiv:2006.06676).

``AugmentPipe`` applies a random, differentiable chain of transformations to a batch ``[B, C, H, W]``
(C = 1 or 3, values nominally in [-1, 1]) before the discriminator sees it. Every transformation is
applied to each image independently with probability ``p * multiplier`` (``p`` is a buffer that the
ADA heuristic, :class:`AdaptiveP`, moves during training).

Groups (names as in the paper and in the ``augpipe`` presets of :func:`augment_pipe_from_preset`):

* ``blit``  — x-flip, rotation by a multiple of 90 degrees, integer translation (at most
  ``xint_max`` = 1/8 of the image size).
* ``geom``  — isotropic scaling (log2-normal, std ``scale_std``), arbitrary rotation (uniform in
  ±pi·``rotate_max``, applied before *and* after the anisotropic scaling, each time with probability
  ``1 - sqrt(1 - rotate·p)`` so that at least one of them happens with probability ``rotate·p``),
  anisotropic scaling (log2-normal, std ``aniso_std``), fractional translation (normal, std
  ``xfrac_std`` of the image size).
* ``color`` — brightness (additive, normal std ``brightness_std``), contrast (multiplicative,
  log2-normal std ``contrast_std``), luma flip (Householder reflection about the luma axis), hue
  rotation (about the luma axis, uniform in ±pi·``hue_max``), saturation (scaling of the chroma
  component, log2-normal std ``saturation_std``).
* ``noise`` / ``cutout`` — additive Gaussian RGB noise and a zeroed square of side ``cutout_size``.

The image-space filtering group (``imgfilter``) of the official code is not implemented.

All geometric transformations of one image are composed into a single 3x3 matrix (output pixel ->
input pixel, in pixel units with the origin at the image centre) and executed once:

* If every output pixel maps exactly onto an input pixel (the blit group alone, or any combination
  that happens to be integer), the image is remapped by index — bit-exact, with ``reflect`` borders
  (the mirror image without repeating the edge pixel, like ``F.pad(mode="reflect")``).
* Otherwise the image is reflect-padded, upsampled 2x (bicubic), resampled with ``grid_sample``
  (bilinear) on a 2x supersampled output grid, and reduced back with an antialiased bilinear 2x
  downsample. This replaces the official wavelet (sym6) low-pass filters by simpler standard
  interpolation; it is differentiable and keeps aliasing low, at the cost of a slight blur on the
  images that are resampled (images left unchanged are never touched).

Colour transformations are composed into one 4x4 homogeneous matrix per image and applied once.
Images for which no transformation fired are returned bit-identical, so ``p = 0`` is the identity.

Randomness: ``forward(images, generator=None)`` draws every random number from ``generator`` (a
``torch.Generator``; default: the global RNG). The draws do not depend on ``p``, so the same seed
gives the same parameters' shapes and order whatever ``p`` is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multifeat.errors import ConfigError

__all__ = [
    "AUGPIPE_SPECS",
    "AdaptiveP",
    "AugmentParams",
    "AugmentPipe",
    "ada_adjust",
    "augment_pipe_from_preset",
]

# Presets: the official ``augpipe`` choices that need no image-space filter, plus single-letter
# names of the groups (b = blit, g = geom, c = color, n = noise) and their combinations.
_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
AUGPIPE_SPECS: dict[str, dict[str, float]] = {
    "blit": _BLIT,
    "geom": _GEOM,
    "color": _COLOR,
    "noise": dict(noise=1),
    "cutout": dict(cutout=1),
    "b": _BLIT,
    "g": _GEOM,
    "c": _COLOR,
    "bg": {**_BLIT, **_GEOM},
    "bc": {**_BLIT, **_COLOR},
    "gc": {**_GEOM, **_COLOR},
    "bgc": {**_BLIT, **_GEOM, **_COLOR},
    "bgcn": {**_BLIT, **_GEOM, **_COLOR, "noise": 1},
}


@dataclass
class AugmentParams:
    """Per-image parameters of one draw (all tensors have leading dimension B).

    Identity values: ``xflip = 0``, ``rotate90 = 0`` (number of quarter turns), ``xint = 0`` (pixels,
    [B, 2] as x, y), ``scale = 1``, ``rotate_pre = rotate_post = 0`` (radians), ``aniso = 1``,
    ``xfrac = 0`` (pixels, [B, 2]), ``brightness = 0``, ``contrast = 1``, ``lumaflip = 0``,
    ``hue = 0`` (radians), ``saturation = 1``, ``noise_std = 0``, ``cutout_size = 0`` (fraction of
    the image side), ``cutout_center`` ([B, 2] in [0, 1]).
    """

    xflip: Tensor
    rotate90: Tensor
    xint: Tensor
    scale: Tensor
    rotate_pre: Tensor
    aniso: Tensor
    rotate_post: Tensor
    xfrac: Tensor
    brightness: Tensor
    contrast: Tensor
    lumaflip: Tensor
    hue: Tensor
    saturation: Tensor
    noise_std: Tensor
    cutout_size: Tensor
    cutout_center: Tensor

    @classmethod
    def identity(cls, batch_size: int, device: torch.device | str | None = None) -> AugmentParams:
        """Parameters that change nothing (edit fields with ``dataclasses.replace`` in experiments)."""
        z = torch.zeros(batch_size, device=device)
        o = torch.ones(batch_size, device=device)
        z2 = torch.zeros(batch_size, 2, device=device)
        return cls(
            xflip=z,
            rotate90=z,
            xint=z2,
            scale=o,
            rotate_pre=z,
            aniso=o,
            rotate_post=z,
            xfrac=z2,
            brightness=z,
            contrast=o,
            lumaflip=z,
            hue=z,
            saturation=o,
            noise_std=z,
            cutout_size=z,
            cutout_center=torch.full((batch_size, 2), 0.5, device=device),
        )

    def geometry_changed(self) -> Tensor:
        """[B] bool: does any geometric transformation differ from the identity?"""
        return (
            (self.xflip != 0)
            | (self.rotate90 != 0)
            | (self.xint != 0).any(dim=1)
            | (self.scale != 1)
            | (self.rotate_pre != 0)
            | (self.aniso != 1)
            | (self.rotate_post != 0)
            | (self.xfrac != 0).any(dim=1)
        )

    def color_changed(self, num_channels: int = 3) -> Tensor:
        """[B] bool: does any colour transformation differ from the identity?"""
        changed = (self.brightness != 0) | (self.contrast != 1) | (self.lumaflip != 0)
        if num_channels > 1:
            changed = changed | (self.hue != 0) | (self.saturation != 1)
        return changed

    def to(self, device: torch.device | str) -> AugmentParams:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})


# ----------------------------------------------------------------------------------------------
# Homogeneous matrices, batched: each argument is a tensor [B] (or a number), result [B, 3, 3].


def _mat3(rows: list[list[Tensor]]) -> Tensor:
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def _translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    o, z = torch.ones_like(tx), torch.zeros_like(tx)
    return _mat3([[o, z, tx], [z, o, ty], [z, z, o]])


def _scale2d(sx: Tensor, sy: Tensor) -> Tensor:
    o, z = torch.ones_like(sx), torch.zeros_like(sx)
    return _mat3([[sx, z, z], [z, sy, z], [z, z, o]])


def _rotate2d(theta: Tensor) -> Tensor:
    o, z = torch.ones_like(theta), torch.zeros_like(theta)
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat3([[c, -s, z], [s, c, z], [z, z, o]])


def geometric_matrix(params: AugmentParams, height: int, width: int) -> Tensor:
    """Compose the geometric parameters into ``G_inv`` [B, 3, 3] (float64).

    ``G_inv @ [x_out, y_out, 1]`` gives the input position of output pixel ``(x_out, y_out)``; both
    in pixels with the origin at the image centre (pixel centres at ``j - (W-1)/2``). The forward
    transformations are applied in the order xflip, rotate90, xint, scale, rotate_pre, aniso,
    rotate_post, xfrac, so their inverses are multiplied on the right in that order.
    """
    p = {f.name: getattr(params, f.name).double() for f in fields(params)}
    one = torch.ones_like(p["scale"])
    g = _scale2d(1 - 2 * p["xflip"], one)
    g = g @ _rotate2d(math.pi / 2 * p["rotate90"])  # inverse of a quarter turn by -pi/2
    g = g @ _translate2d(-p["xint"][:, 0], -p["xint"][:, 1])
    g = g @ _scale2d(1 / p["scale"], 1 / p["scale"])
    g = g @ _rotate2d(p["rotate_pre"])  # inverse of rotation by -theta
    g = g @ _scale2d(1 / p["aniso"], p["aniso"])
    g = g @ _rotate2d(p["rotate_post"])
    g = g @ _translate2d(-p["xfrac"][:, 0], -p["xfrac"][:, 1])
    return g


def color_matrix(params: AugmentParams, num_channels: int = 3) -> Tensor:
    """Compose the colour parameters into ``C`` [B, 4, 4] (float32): ``C @ [r, g, b, 1]`` is the new colour.

    Order: brightness, contrast, luma flip, hue rotation, saturation (each multiplied on the left).
    Hue and saturation are skipped for single-channel images.
    """
    b = params.brightness.float()
    n = b.shape[0]
    eye = torch.eye(4, device=b.device).expand(n, 4, 4)
    v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=b.device) / math.sqrt(3)  # luma axis
    vv = torch.outer(v, v)
    c = eye.clone()
    c[:, :3, 3] = b[:, None]  # brightness: translation along (1, 1, 1)
    c = torch.diag_embed(torch.stack([params.contrast.float()] * 3 + [torch.ones_like(b)], -1)) @ c
    c = (eye - 2 * vv * params.lumaflip.float()[:, None, None]) @ c  # Householder reflection
    if num_channels > 1:
        theta = params.hue.float()
        # Rodrigues' rotation by theta about the unit axis v (acting on the RGB part).
        k = torch.zeros(4, 4, device=b.device)
        k[0, 1], k[0, 2], k[1, 0], k[1, 2], k[2, 0], k[2, 1] = -v[2], v[1], v[2], -v[0], -v[1], v[0]
        s, co = torch.sin(theta)[:, None, None], torch.cos(theta)[:, None, None]
        rot = eye.clone()
        rot[:, :3, :3] = vv[:3, :3] + co * (torch.eye(3, device=b.device) - vv[:3, :3]) + s * k[:3, :3]
        c = rot @ c
        c = (vv + (eye - vv) * params.saturation.float()[:, None, None]) @ c
    return c


def _reflect_index(i: Tensor, n: int) -> Tensor:
    """Map integer indices onto [0, n) by mirroring without repeating the edge (``reflect``)."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    m = torch.remainder(i, period)
    return torch.where(m >= n, period - m, m)


def _source_coords(g_inv: Tensor, height: int, width: int, factor: int = 1) -> Tensor:
    """Input positions [B, H*f, W*f, 2] (x, y; pixels, origin at the input's top-left pixel centre).

    ``factor`` > 1 gives a supersampled output grid (sub-pixel centres of each output pixel).
    """
    cx, cy = (width - 1) / 2, (height - 1) / 2
    dev = g_inv.device
    xs = (torch.arange(width * factor, device=dev, dtype=torch.float64) + 0.5) / factor - 0.5 - cx
    ys = (torch.arange(height * factor, device=dev, dtype=torch.float64) + 0.5) / factor - 0.5 - cy
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1)  # [Hf, Wf, 3]
    src = torch.einsum("bij,hwj->bhwi", g_inv, pts)[..., :2]
    return src + torch.tensor([cx, cy], device=dev, dtype=torch.float64)


def _blit(images: Tensor, src: Tensor) -> Tensor:
    """Exact remap: ``src`` [B, H, W, 2] holds integer input positions; borders reflect."""
    b, c, h, w = images.shape
    ix = _reflect_index(src[..., 0].round().long(), w)
    iy = _reflect_index(src[..., 1].round().long(), h)
    idx = (iy * w + ix).reshape(b, 1, h * w).expand(b, c, h * w)
    return images.reshape(b, c, h * w).gather(2, idx).reshape(b, c, h, w)


def _resample(images: Tensor, g_inv: Tensor) -> Tensor:
    """General affine remap with reflect padding, 2x supersampling and antialiased reduction.

    Computed in float32 (half-precision inputs are converted and the result converted back).
    """
    dtype = images.dtype
    images = images.float()
    b, c, h, w = images.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # Padding: how far outside the image the transformed corners reach, plus filter support.
    corners = torch.tensor(
        [[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=torch.float64, device=g_inv.device
    )
    cp = torch.einsum("bij,kj->bki", g_inv, corners)[..., :2]  # [B, 4, 2]
    support = 2.0
    ml = float((-cp[..., 0]).max()) - cx + support
    mr = float(cp[..., 0].max()) - cx + support
    mt = float((-cp[..., 1]).max()) - cy + support
    mb = float(cp[..., 1].max()) - cy + support
    ml, mr = (min(max(math.ceil(m), 0), w - 1) for m in (ml, mr))
    mt, mb = (min(max(math.ceil(m), 0), h - 1) for m in (mt, mb))
    padded = F.pad(images, [ml, mr, mt, mb], mode="reflect") if (ml or mr or mt or mb) else images
    hp, wp = padded.shape[-2:]
    up = F.interpolate(padded, scale_factor=2, mode="bicubic", align_corners=False)
    # grid_sample's normalised coordinates (align_corners=False) do not depend on the resolution,
    # so the 2x upsampled padded image is addressed in the padded image's own pixel units.
    src = _source_coords(g_inv, h, w, factor=2)
    gx = (src[..., 0] + ml + 0.5) * (2.0 / wp) - 1
    gy = (src[..., 1] + mt + 0.5) * (2.0 / hp) - 1
    grid = torch.stack([gx, gy], dim=-1).to(images.dtype)
    out = F.grid_sample(up, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False, antialias=True).to(dtype)


class AugmentPipe(nn.Module):
    """Differentiable ADA augmentation pipeline.

    Args (probability multipliers; 0 disables a transformation, the effective probability is
    ``multiplier * p``): ``xflip, rotate90, xint, scale, rotate, aniso, xfrac, brightness, contrast,
    lumaflip, hue, saturation, noise, cutout`` (all default 0).
    Strengths (the official defaults): ``xint_max=0.125`` (fraction of the image size),
    ``scale_std=0.2``, ``aniso_std=0.2``, ``contrast_std=0.5``, ``saturation_std=1`` (log2 std),
    ``rotate_max=1`` and ``hue_max=1`` (1 = full circle), ``xfrac_std=0.125`` (fraction of the image
    size), ``brightness_std=0.2``, ``noise_std=0.1``, ``cutout_size=0.5``.
    ``p``: initial value of the ``p`` buffer (a 0-dim float tensor; default 0, as ADA starts).

    ``forward(images [B, C, H, W], generator=None) -> [B, C, H, W]`` (C = 1 or 3).
    """

    def __init__(
        self,
        xflip: float = 0,
        rotate90: float = 0,
        xint: float = 0,
        xint_max: float = 0.125,
        scale: float = 0,
        rotate: float = 0,
        aniso: float = 0,
        xfrac: float = 0,
        scale_std: float = 0.2,
        rotate_max: float = 1,
        aniso_std: float = 0.2,
        xfrac_std: float = 0.125,
        brightness: float = 0,
        contrast: float = 0,
        lumaflip: float = 0,
        hue: float = 0,
        saturation: float = 0,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        hue_max: float = 1,
        saturation_std: float = 1,
        noise: float = 0,
        cutout: float = 0,
        noise_std: float = 0.1,
        cutout_size: float = 0.5,
        p: float = 0.0,
    ) -> None:
        super().__init__()
        args = dict(locals())
        for name in ("self", "__class__", "p"):
            args.pop(name, None)
        for name, value in args.items():
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"AugmentPipe: {name}={value!r} must be a finite number >= 0")
            setattr(self, name, value)
        self.register_buffer("p", torch.tensor(float(p)))

    def extra_repr(self) -> str:
        on = [
            k
            for k in (
                "xflip",
                "rotate90",
                "xint",
                "scale",
                "rotate",
                "aniso",
                "xfrac",
                "brightness",
                "contrast",
                "lumaflip",
                "hue",
                "saturation",
                "noise",
                "cutout",
            )
            if getattr(self, k) > 0
        ]
        return f"p={float(self.p):.4f}, enabled={on}"

    # -- sampling -------------------------------------------------------------------------------

    def sample_params(
        self,
        batch_size: int,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> AugmentParams:
        """Draw one set of per-image parameters (identity values where a transformation did not fire)."""
        gdev = generator.device if generator is not None else (device or "cpu")
        p = float(self.p)
        prm = AugmentParams.identity(batch_size, device=gdev)

        def rand(*shape):
            return torch.rand(*shape, generator=generator, device=gdev)

        def randn(*shape):
            return torch.randn(*shape, generator=generator, device=gdev)

        def fire(mult: float, shape=(batch_size,)) -> Tensor:
            return rand(*shape) < mult * p

        b = batch_size
        if self.xflip > 0:
            i = torch.floor(rand(b) * 2)
            prm.xflip = torch.where(fire(self.xflip), i, 0.0)
        if self.rotate90 > 0:
            i = torch.floor(rand(b) * 4)
            prm.rotate90 = torch.where(fire(self.rotate90), i, 0.0)
        if self.xint > 0:
            t = (rand(b, 2) * 2 - 1) * self.xint_max
            t = torch.where(fire(self.xint, (b, 1)), t, 0.0)
            prm.xint = torch.stack([torch.round(t[:, 0] * width), torch.round(t[:, 1] * height)], dim=1)
        if self.scale > 0:
            s = torch.exp2(randn(b) * self.scale_std)
            prm.scale = torch.where(fire(self.scale), s, 1.0)
        p_rot = 1 - math.sqrt(min(max(1 - self.rotate * p, 0.0), 1.0))  # P(pre or post) = rotate * p
        if self.rotate > 0:
            theta = (rand(b) * 2 - 1) * math.pi * self.rotate_max
            prm.rotate_pre = torch.where(rand(b) < p_rot, theta, 0.0)
        if self.aniso > 0:
            s = torch.exp2(randn(b) * self.aniso_std)
            prm.aniso = torch.where(fire(self.aniso), s, 1.0)
        if self.rotate > 0:
            theta = (rand(b) * 2 - 1) * math.pi * self.rotate_max
            prm.rotate_post = torch.where(rand(b) < p_rot, theta, 0.0)
        if self.xfrac > 0:
            t = randn(b, 2) * self.xfrac_std
            t = torch.where(fire(self.xfrac, (b, 1)), t, 0.0)
            prm.xfrac = t * torch.tensor([float(width), float(height)], device=gdev)
        if self.brightness > 0:
            v = randn(b) * self.brightness_std
            prm.brightness = torch.where(fire(self.brightness), v, 0.0)
        if self.contrast > 0:
            v = torch.exp2(randn(b) * self.contrast_std)
            prm.contrast = torch.where(fire(self.contrast), v, 1.0)
        if self.lumaflip > 0:
            i = torch.floor(rand(b) * 2)
            prm.lumaflip = torch.where(fire(self.lumaflip), i, 0.0)
        if self.hue > 0:
            theta = (rand(b) * 2 - 1) * math.pi * self.hue_max
            prm.hue = torch.where(fire(self.hue), theta, 0.0)
        if self.saturation > 0:
            v = torch.exp2(randn(b) * self.saturation_std)
            prm.saturation = torch.where(fire(self.saturation), v, 1.0)
        if self.noise > 0:
            sigma = randn(b).abs() * self.noise_std
            prm.noise_std = torch.where(fire(self.noise), sigma, 0.0)
        if self.cutout > 0:
            size = torch.where(fire(self.cutout), self.cutout_size, 0.0)
            prm.cutout_size = size
            prm.cutout_center = rand(b, 2)
        return prm

    # -- execution ------------------------------------------------------------------------------

    @staticmethod
    def apply(images: Tensor, params: AugmentParams, generator: torch.Generator | None = None) -> Tensor:
        """Apply given parameters to ``images`` [B, C, H, W]; images with identity parameters are untouched.

        ``generator`` is only used for the additive noise.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"AugmentPipe expects images [B, 1 or 3, H, W], got {tuple(images.shape)}")
        b, c, h, w = images.shape
        dev = images.device
        params = params.to(dev)

        # Geometry.
        g_inv = geometric_matrix(params, h, w)
        moved = params.geometry_changed()
        if bool(moved.any()):
            src = _source_coords(g_inv, h, w)
            integral = (src - src.round()).abs().flatten(1).amax(dim=1) < 1e-3
            out = images
            blit_idx = (moved & integral).nonzero().flatten()
            if blit_idx.numel():
                out = out.index_copy(0, blit_idx, _blit(images[blit_idx], src[blit_idx]))
            res_idx = (moved & ~integral).nonzero().flatten()
            if res_idx.numel():
                out = out.index_copy(0, res_idx, _resample(images[res_idx], g_inv[res_idx]))
            images = out

        # Colour.
        cm = color_matrix(params, c).to(images.dtype)
        idx = params.color_changed(c).nonzero().flatten()
        if idx.numel():
            x = images[idx].reshape(idx.numel(), c, h * w)
            m = cm[idx]
            if c == 3:
                y = m[:, :3, :3] @ x + m[:, :3, 3:]
            else:  # grey: average the three output rows, then act on the (equal) input channels
                m = m[:, :3, :].mean(dim=1, keepdim=True)
                y = x * m[:, :, :3].sum(dim=2, keepdim=True) + m[:, :, 3:]
            images = images.index_copy(0, idx, y.reshape(idx.numel(), c, h, w))

        # Additive noise.
        sigma = params.noise_std.to(images.dtype)
        if bool((sigma > 0).any()):
            gdev = generator.device if generator is not None else dev
            noise = torch.randn(images.shape, generator=generator, device=gdev, dtype=images.dtype).to(dev)
            images = images + noise * sigma[:, None, None, None]

        # Cutout.
        size = params.cutout_size
        if bool((size > 0).any()):
            cx = ((torch.arange(w, device=dev) + 0.5) / w)[None, None, :]
            cy = ((torch.arange(h, device=dev) + 0.5) / h)[None, :, None]
            ctr = params.cutout_center
            keep = ((cx - ctr[:, 0, None, None]).abs() >= size[:, None, None] / 2) | (
                (cy - ctr[:, 1, None, None]).abs() >= size[:, None, None] / 2
            )
            images = images * keep[:, None].to(images.dtype)
        return images

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, _, h, w = images.shape
        params = self.sample_params(b, h, w, generator=generator, device=images.device)
        return self.apply(images, params, generator=generator)


def augment_pipe_from_preset(name: str = "bgc", p: float = 0.0, **overrides: float) -> AugmentPipe:
    """Build an :class:`AugmentPipe` from a preset name (see ``AUGPIPE_SPECS``), e.g. ``"bgc"``.

    ``overrides`` set or replace constructor arguments (e.g. ``rotate_max=0.5``).
    """
    if name not in AUGPIPE_SPECS:
        raise ConfigError(f"unknown augmentation preset {name!r}; expected one of {sorted(AUGPIPE_SPECS)}")
    return AugmentPipe(**{**AUGPIPE_SPECS[name], **overrides}, p=p)


# ----------------------------------------------------------------------------------------------
# The ADA heuristic (official ``training_loop.py``): the one controller of ``p`` in this package.


def ada_adjust(p: float, sign_mean: float, batch_size: int, interval: int = 4, target: float = 0.6,
               ada_kimg: float = 500) -> float:
    """New ``p`` after one ADA interval, as in the official training loop:

    ``max(0, p + sign(r_t - target) * batch_size * interval / (ada_kimg * 1000))``

    ``sign_mean`` is ``r_t = E[sign(D(real))]`` over the interval (every real logit D produced,
    summed over processes), ``batch_size`` the global batch size. Only the lower bound 0 is enforced
    (the official rule has no upper clamp; probabilities ``multiplier * p`` above 1 act as 1).
    """
    diff = sign_mean - target
    sgn = (diff > 0) - (diff < 0)
    return max(0.0, p + sgn * batch_size * interval / (ada_kimg * 1000))


ReduceFn = Callable[[Tensor], "Tensor | None"]


def _default_reduce(t: Tensor) -> Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t


class AdaptiveP(nn.Module):
    """The ADA controller of an augmentation pipe's ``p`` (official rule, see :func:`ada_adjust`).

    Use: :meth:`accumulate` the discriminator's logits of every pass over (augmented) real images,
    and call :meth:`adjust` once every ``interval`` batches with the global batch size. ``adjust``
    sums the statistics across processes, computes ``r_t = E[sign(D(real))]``, moves ``p`` and
    clears the statistics. Its state (the statistics) is a buffer, so it is saved with its owner.

    Args:
        pipe: the :class:`AugmentPipe` whose ``p`` buffer is read and written (None: statistics only).
            It is referenced, not registered as a sub-module (its ``p`` stays under the owner's key).
        target: ``r_t`` the rule aims at (official 0.6); None keeps ``p`` fixed and only reports ``r_t``.
        interval: batches between adjustments (official 4); enters the step size.
        ada_kimg: thousands of images for ``p`` to move by 1 (official 500).
        reduce_fn: sums a float64 tensor ``[2]`` across processes, in place or by returning the result.
            Default: ``torch.distributed.all_reduce`` when a process group is initialised, else none.
    """

    def __init__(
        self,
        pipe: AugmentPipe | None = None,
        target: float | None = 0.6,
        interval: int = 4,
        ada_kimg: float = 500,
        reduce_fn: ReduceFn | None = None,
    ) -> None:
        super().__init__()
        if int(interval) < 1:
            raise ConfigError(f"AdaptiveP: interval={interval!r} must be >= 1")
        if not ada_kimg > 0:
            raise ConfigError(f"AdaptiveP: ada_kimg={ada_kimg!r} must be > 0")
        if target is not None and not math.isfinite(float(target)):
            raise ConfigError(f"AdaptiveP: target={target!r} must be a finite number or None")
        self.__dict__["_pipe"] = pipe  # plain attribute: not a sub-module
        self.target = None if target is None else float(target)
        self.interval, self.ada_kimg = int(interval), float(ada_kimg)
        self.reduce_fn = reduce_fn or _default_reduce
        self.register_buffer("stats", torch.zeros(2, dtype=torch.float64))  # sum of signs, number of logits
        self.last_rt: float | None = None

    @property
    def pipe(self) -> AugmentPipe | None:
        return self.__dict__["_pipe"]

    @property
    def p(self) -> float:
        """The pipe's current ``p`` (0 without a pipe)."""
        return float(self.pipe.p) if self.pipe is not None else 0.0

    def extra_repr(self) -> str:
        return f"target={self.target}, interval={self.interval}, ada_kimg={self.ada_kimg:g}"

    @torch.no_grad()
    def accumulate(self, real_logits: Tensor) -> None:
        """Add ``sign(real_logits)`` (any shape; every element counts, ``sign(0) = 0``) to the statistics."""
        x = real_logits.detach()
        signs = x.sign().sum(dtype=torch.float64).to(self.stats.device)  # no host sync on accelerators
        self.stats[0] += signs
        self.stats[1] += float(x.numel())

    @torch.no_grad()
    def adjust(self, batch_size: int) -> float | None:
        """End of an interval: returns ``r_t`` (None if nothing was accumulated) and, with a pipe and
        a target, sets ``p`` to :func:`ada_adjust` of it. ``batch_size``: global batch size."""
        stats = self.stats.clone()
        reduced = self.reduce_fn(stats)
        stats = (reduced if reduced is not None else stats).cpu()
        self.stats.zero_()
        if stats[1] <= 0:
            return None
        rt = float(stats[0] / stats[1])
        self.last_rt = rt
        if self.pipe is not None and self.target is not None:
            new_p = ada_adjust(self.p, rt, int(batch_size), self.interval, self.target, self.ada_kimg)
            self.pipe.p.fill_(new_p)
        return rt
