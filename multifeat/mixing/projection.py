"""Projection: find the style ``w`` (and noise maps) with which a StyleGAN2 generator draws a target image.

The optimisation follows the official StyleGAN2-ADA projector, batched over targets (every target has
its own ``w`` and noise maps, and since the loss is a sum of per-target terms and Adam works per
element, each target is optimised exactly as it would be alone):

* start: ``w_avg``, the mean of ``w_avg_samples`` (10 000) mapped random ``z``; ``w_std`` =
  ``sqrt(mean ||w - w_avg||^2)`` over the same samples;
* space ``w``: one ``w [N, 1, w_dim]`` broadcast to all layers; ``w+``: one per layer ``[N, num_ws, w_dim]``;
* per-layer noise maps (every ``noise_const`` of the synthesis network, one map per target) start as
  unit Gaussian noise and are optimised too (``optimize_noise``), renormalised after every step to zero
  mean and unit variance;
* step ``s`` of ``T`` (``t = s / T``): learning rate ``lr * ramp`` with
  ``ramp = min(1, (1 - t) / 0.25)`` passed through ``0.5 - 0.5 cos(pi ramp)`` and multiplied by
  ``min(1, t / 0.05)``; the style seen by the generator is ``w + n``, ``n ~ N(0, s_n^2)`` with
  ``s_n = w_std * 0.05 * max(0, 1 - t / 0.75)^2``;
* loss ``sum_i d(G(w_i + n_i), target_i) + 1e5 * sum_i R(noise_i)``, ``d`` the image distance
  (:mod:`multifeat.mixing.distance`), ``R`` the noise regulariser: over every noise map and its 2x2
  average-pooled copies down to 8x8, the squared mean of the map times itself shifted by one pixel
  horizontally, plus the same vertically; Adam with betas (0.9, 0.999).

Reported for every target, from the final images (``w`` without the exploration noise, the optimised
noise maps): pixel ``mse`` (on the [-1, 1] scale), ``psnr`` in dB (``10 log10(4 / mse)``, i.e. the PSNR
of [0, 1] images), and ``perceptual`` (the distance used, named in the result).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multifeat.errors import ConfigError

__all__ = [
    "ProjectionResult",
    "estimate_w_stats",
    "image_errors",
    "noise_layers",
    "noise_regularization",
    "project",
    "projection_schedule",
    "swapped_noise",
    "synthesize",
]

SPACES = ("w", "w+")


@dataclass
class ProjectionResult:
    """What :func:`project` found.

    Attributes:
        ws: ``[N, num_ws, w_dim]`` styles (identical rows over layers in space ``w``).
        space: ``"w"`` or ``"w+"``.
        noise: layer name -> ``[N, R, R]`` optimised noise maps (None when noise was not optimised:
            then the generator's own ``noise_const`` maps are used).
        images: ``[N, C, R, R]`` projected images in [-1, 1].
        errors: per target ``{"mse", "psnr", "perceptual"}`` of ``images`` against the targets.
        start_errors: the same for the starting point (``w_avg``, initial noise maps).
        distance: name of the perceptual distance (``lpips-vgg``, ``pixel-gradient``, ...).
        distance_description: one line describing it.
        loss_history: ``[steps]`` total loss divided by N, per step.
        settings: the optimisation settings used.
    """

    ws: Tensor
    space: str
    noise: dict[str, Tensor] | None
    images: Tensor
    errors: list[dict[str, float]]
    start_errors: list[dict[str, float]]
    distance: str
    distance_description: str
    loss_history: Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tensors, numbers, strings) for ``torch.save`` / weights-only loading."""
        return {
            "ws": self.ws.detach().cpu(),
            "space": self.space,
            "noise": None if self.noise is None else {k: v.detach().cpu() for k, v in self.noise.items()},
            "errors": self.errors,
            "start_errors": self.start_errors,
            "distance": self.distance,
            "distance_description": self.distance_description,
            "loss_history": self.loss_history.detach().cpu(),
            "settings": dict(self.settings),
        }


def projection_schedule(
    step: int,
    num_steps: int,
    initial_learning_rate: float = 0.1,
    lr_rampdown_length: float = 0.25,
    lr_rampup_length: float = 0.05,
    initial_noise_factor: float = 0.05,
    noise_ramp_length: float = 0.75,
    w_std: float = 1.0,
) -> tuple[float, float]:
    """``(learning rate, std of the noise added to w)`` at ``step`` of ``num_steps`` (see module doc)."""
    t = step / num_steps
    w_noise_scale = w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp_length) ** 2
    ramp = min(1.0, (1.0 - t) / lr_rampdown_length)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, t / lr_rampup_length) if lr_rampup_length > 0 else ramp
    return initial_learning_rate * ramp, w_noise_scale


def _map(G: nn.Module, z: Tensor, c: Tensor | None) -> Tensor:
    if getattr(G, "c_dim", 0):
        if c is None:
            raise ConfigError(f"this generator is conditional (c_dim={G.c_dim}); give a label c [{G.c_dim}]")
        c = c.to(z.device, torch.float32).reshape(1, -1).expand(z.shape[0], -1)
    else:
        c = None
    return G.mapping(z, c)


@torch.no_grad()
def estimate_w_stats(
    G: nn.Module, num_samples: int = 10_000, seed: int = 0, c: Tensor | None = None, batch_size: int = 2000
) -> tuple[Tensor, float]:
    """``(w_avg [w_dim], w_std)`` from ``num_samples`` mapped ``z ~ N(0, I)`` (``torch.Generator`` seeded
    with ``seed``); ``w_std = sqrt(mean_i ||w_i - w_avg||^2)``."""
    if num_samples < 1:
        raise ConfigError(f"w_avg_samples must be >= 1, got {num_samples}")
    device = next(G.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    ws = []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        z = torch.randn(n, G.z_dim, generator=gen).to(device)
        ws.append(_map(G, z, c)[:, 0].float())
    w = torch.cat(ws)
    w_avg = w.mean(dim=0)
    w_std = float((w - w_avg).square().sum(dim=1).mean().sqrt())
    return w_avg, w_std


def noise_layers(synthesis: nn.Module) -> dict[str, nn.Module]:
    """Layers of ``synthesis`` that hold a ``noise_const`` buffer, by name (network order)."""
    return {name: m for name, m in synthesis.named_modules() if isinstance(getattr(m, "noise_const", None), Tensor)}


@contextlib.contextmanager
def swapped_noise(synthesis: nn.Module, noise: dict[str, Tensor] | None) -> Iterator[None]:
    """Within the block, layer ``name``'s ``noise_const`` is ``noise[name]`` (``[N, R, R]``: one map per
    image); the generator's own maps are put back afterwards. ``None`` changes nothing."""
    if not noise:
        yield
        return
    layers = noise_layers(synthesis)
    unknown = sorted(set(noise) - set(layers))
    if unknown:
        raise ConfigError(f"noise maps given for unknown layers {unknown[:4]}; the generator's noise layers are {list(layers)[:6]}...")
    saved = {name: layers[name].noise_const for name in noise}
    try:
        for name, maps in noise.items():
            layers[name].noise_const = maps.unsqueeze(1) if maps.ndim == 3 else maps
        yield
    finally:
        for name, buf in saved.items():
            layers[name].noise_const = buf


def synthesize(G: nn.Module, ws: Tensor, noise: dict[str, Tensor] | None = None, noise_mode: str = "const") -> Tensor:
    """``G.synthesis(ws)`` with per-image noise maps (or the generator's own), raw output ``[N, C, R, R]``."""
    with swapped_noise(G.synthesis, noise):
        return G.synthesis(ws, noise_mode=noise_mode)


def noise_regularization(maps: list[Tensor]) -> Tensor:
    """Per-image noise regulariser ``[N]`` of maps ``[N, 1, R, R]`` (see module doc)."""
    total = maps[0].new_zeros(maps[0].shape[0])
    for m in maps:
        x = m if m.ndim == 4 else m.unsqueeze(1)
        while True:
            total = total + (x * torch.roll(x, shifts=1, dims=3)).mean(dim=(1, 2, 3)).square()
            total = total + (x * torch.roll(x, shifts=1, dims=2)).mean(dim=(1, 2, 3)).square()
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return total


@torch.no_grad()
def image_errors(images: Tensor, targets: Tensor, distance: nn.Module) -> list[dict[str, float]]:
    """Per image ``{"mse", "psnr", "perceptual"}``: images clamped to [-1, 1]; ``psnr = 10 log10(4 / mse)``."""
    x = images.float().clamp(-1, 1)
    y = targets.float().to(x.device)
    mse = (x - y).square().mean(dim=(1, 2, 3))
    psnr = 10 * torch.log10(4.0 / mse.clamp_min(1e-12))
    perc = distance(x, y)
    return [{"mse": float(m), "psnr": float(p), "perceptual": float(d)} for m, p, d in zip(mse, psnr, perc)]


def project(
    G: nn.Module,
    targets: Tensor,
    distance: nn.Module,
    *,
    space: str = "w",
    num_steps: int = 1000,
    w_avg_samples: int = 10_000,
    initial_learning_rate: float = 0.1,
    initial_noise_factor: float = 0.05,
    lr_rampdown_length: float = 0.25,
    lr_rampup_length: float = 0.05,
    noise_ramp_length: float = 0.75,
    regularize_noise_weight: float = 1e5,
    optimize_noise: bool = True,
    seed: int = 0,
    c: Tensor | None = None,
    progress: bool = True,
    w_stats: tuple[Tensor, float] | None = None,
) -> ProjectionResult:
    """Project ``targets [N, C, R, R]`` (in [-1, 1], the generator's resolution) into ``space`` ``w``/``w+``.

    ``G`` is a StyleGAN2 generator in eval mode whose parameters need no gradients (it is not changed:
    noise maps are swapped in only during each forward pass). Randomness (the ``z`` samples for
    ``w_avg``, initial noise maps, exploration noise) comes from ``torch.Generator``s seeded with ``seed``.
    ``w_stats`` reuses a ``(w_avg, w_std)`` from :func:`estimate_w_stats`. Defaults are the official ones.
    """
    if space not in SPACES:
        raise ConfigError(f"space must be one of {SPACES}, got {space!r}")
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    res, ch = int(G.img_resolution), int(G.img_channels)
    if targets.ndim != 4 or tuple(targets.shape[1:]) != (ch, res, res):
        raise ConfigError(f"targets must be [N, {ch}, {res}, {res}] (the generator's images); got {tuple(targets.shape)}")
    if targets.shape[0] < 1:
        raise ConfigError("no targets to project")
    device = next(G.parameters()).device
    targets = targets.to(device, torch.float32)
    n, num_ws = targets.shape[0], int(G.num_ws)

    w_avg, w_std = w_stats if w_stats is not None else estimate_w_stats(G, w_avg_samples, seed=seed, c=c)
    w_avg = w_avg.to(device, torch.float32)
    gen = torch.Generator(device="cpu").manual_seed(int(seed) + 1)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    w_opt = w_avg.reshape(1, 1, -1).repeat(n, 1 if space == "w" else num_ws, 1).clone().requires_grad_(True)
    layers = noise_layers(G.synthesis)
    noise: dict[str, Tensor] | None = None
    params = [w_opt]
    if optimize_noise and layers:
        noise = {name: randn(n, 1, *m.noise_const.shape[-2:]).requires_grad_(True) for name, m in layers.items()}
        params += list(noise.values())
    opt = torch.optim.Adam(params, betas=(0.9, 0.999), lr=initial_learning_rate)

    def render(w: Tensor) -> Tensor:
        ws = w.expand(-1, num_ws, -1) if w.shape[1] == 1 else w
        return synthesize(G, ws, noise)

    with torch.no_grad():
        start_errors = image_errors(render(w_opt), targets, distance)

    history = torch.zeros(num_steps)
    bar = _progress(num_steps, progress, desc=f"project {n} image(s) into {space}")
    try:
        for step in range(num_steps):
            lr, w_noise_scale = projection_schedule(
                step, num_steps, initial_learning_rate, lr_rampdown_length, lr_rampup_length,
                initial_noise_factor, noise_ramp_length, w_std,
            )
            for group in opt.param_groups:
                group["lr"] = lr
            w_noise = randn(*w_opt.shape) * w_noise_scale
            images = render(w_opt + w_noise)
            dist = distance(images, targets)
            loss = dist.sum()
            if noise is not None:
                loss = loss + regularize_noise_weight * noise_regularization(list(noise.values())).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if noise is not None:
                with torch.no_grad():
                    for m in noise.values():
                        m -= m.mean(dim=(1, 2, 3), keepdim=True)
                        m *= m.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
            history[step] = float(loss.detach()) / n
            if bar is not None:
                bar.set_postfix(dist=f"{float(dist.detach().mean()):.4f}", loss=f"{float(history[step]):.4f}", refresh=False)
                bar.update(1)
            elif progress and (step % max(1, num_steps // 10) == 0 or step == num_steps - 1):
                print(f"project step {step + 1}/{num_steps}: mean distance {float(dist.detach().mean()):.4f}")
    finally:
        if bar is not None:
            bar.close()

    with torch.no_grad():
        w_final = w_opt.detach()
        images = render(w_final).clamp(-1, 1)
        errors = image_errors(images, targets, distance)
    ws = w_final.expand(-1, num_ws, -1).clone() if space == "w" else w_final.clone()
    settings = dict(
        num_steps=num_steps, w_avg_samples=w_avg_samples, initial_learning_rate=initial_learning_rate,
        initial_noise_factor=initial_noise_factor, lr_rampdown_length=lr_rampdown_length,
        lr_rampup_length=lr_rampup_length, noise_ramp_length=noise_ramp_length,
        regularize_noise_weight=regularize_noise_weight, optimize_noise=bool(noise is not None), seed=seed, w_std=w_std,
    )
    return ProjectionResult(
        ws=ws, space=space,
        noise=None if noise is None else {k: v.detach()[:, 0].clone() for k, v in noise.items()},
        images=images, errors=errors, start_errors=start_errors,
        distance=str(getattr(distance, "name", type(distance).__name__)),
        distance_description=str(getattr(distance, "description", getattr(distance, "name", type(distance).__name__))),
        loss_history=history, settings=settings,
    )


def _progress(total: int, enabled: bool, desc: str):
    """A tqdm bar when tqdm is installed and ``enabled``; None otherwise (plain prints are used)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
