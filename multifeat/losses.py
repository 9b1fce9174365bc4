"""Loss functions, pure functions of tensors, with the paper's names and default weights.

Method A (all least-squares, LSGAN). The paper writes sums over the minibatch ``Σ_i``; these
functions take the **mean** over the batch instead, i.e. ``paper_sum = m * mean`` for a batch of
``m``. The factor is a constant per batch size, so the minimiser and the relative weight of the
terms are unchanged, while the loss scale (and so a good learning rate) no longer depends on ``m``.

- Phase 1:  ``L_D1 = Σ (D1(x)-1)² + (D1(G1(z))-0)²``         -> :func:`lsgan_d_loss`
            ``L_G1 = Σ (D1(G1(z))-1)²``                        -> :func:`lsgan_g_loss`
- Phase 2:  ``L_D2 = Σ (D2(x)-1)² + Σ (D2(y)-0)²``             -> :func:`classifier_loss`
- Phase 3:  ``L_D3 = 1/(α1+α2+α3) {α1 Σ(D3(x)-1)² + α2 Σ(D3(G3(z)))² + α3 Σ(D3(G3(z)) - D2(G3(z)))²}``
                                                                -> :func:`phase3_d_loss`
            ``L_G3 = 1/(β1+β2) {β1 Σ(D3(G3(z))-1)² + β2 Σ(f(D2(G3(z)))-1)²}``
                                                                -> :func:`phase3_g_loss`
  with α = (1.0, 1.0, 0.1), β = (2.0, 30.0) (the paper's values, found by trial and error).

``f`` (the paper leaves it undefined; its purpose is that D2 judges the fake to carry feature 1):
see :func:`make_f`.

Method B (StyleGAN2-ADA, as in the official ``training/loss.py``; logits are D's raw outputs):

- G:            ``mean(softplus(-D(G(z))))`` (non-saturating logistic)       -> :func:`logistic_g_loss`
- D:            ``mean(softplus(D(G(z))) + softplus(-D(x)))``              -> :func:`logistic_d_loss`

- R1:           ``|d sum_i D(x_i) / d x_i|^2`` per sample                  -> :func:`r1_penalty`
- path length:  ``(|J_w^T y| - a)^2`` with ``a`` a running mean          -> :func:`path_length_penalty`
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from multifeat.errors import ConfigError

ALPHA_DEFAULT = (1.0, 1.0, 0.1)
BETA_DEFAULT = (2.0, 30.0)


def _msq(x: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    return (x.float() - target).pow(2).mean()


# ---------------------------------------------------------------------------------------------- phase 1
def lsgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """``mean((D(x)-1)²) + mean(D(G(z))²)`` — the paper's L_D1 divided by the batch size."""
    return _msq(d_real, 1.0) + _msq(d_fake, 0.0)


def lsgan_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """``mean((D(G(z))-1)²)`` — the paper's L_G1 divided by the batch size."""
    return _msq(d_fake, 1.0)


# ---------------------------------------------------------------------------------------------- phase 2
def classifier_loss(p_pos: torch.Tensor, p_neg: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """D2's loss on probabilities in [0, 1]: positives towards 1, negatives towards 0.

    ``kind="mse"`` (the paper): ``mean((D2(x)-1)²) + mean(D2(y)²)``; each set is averaged on its
    own, so the paper's two sums are each divided by their set's size.
    ``kind="bce"``: binary cross-entropy with the same targets (on probabilities, clamped).
    """
    if kind == "mse":
        return _msq(p_pos, 1.0) + _msq(p_neg, 0.0)
    if kind == "bce":
        eps = 1e-6
        return F.binary_cross_entropy(p_pos.float().clamp(eps, 1 - eps), torch.ones_like(p_pos, dtype=torch.float)) + (
            F.binary_cross_entropy(p_neg.float().clamp(eps, 1 - eps), torch.zeros_like(p_neg, dtype=torch.float))
        )
    raise ConfigError(f"classifier loss must be 'mse' or 'bce', got {kind!r}")


# ---------------------------------------------------------------------------------------------- phase 3
def check_weights(name: str, w: Sequence[float], n: int) -> list[float]:
    """``n`` non-negative loss weights with a positive sum (α, β), as floats."""
    try:
        out = [float(v) for v in w]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} must be {n} numbers, got {w!r}") from e
    if len(out) != n or any(v < 0 for v in out) or sum(out) <= 0:
        raise ConfigError(f"{name} must be {n} non-negative numbers with a positive sum, got {list(w)}")
    return out


def phase3_d_loss(
    d3_real: torch.Tensor,
    d3_fake: torch.Tensor,
    d2_fake: torch.Tensor,
    alpha: Sequence[float] = ALPHA_DEFAULT,
) -> torch.Tensor:
    """L_D3 (batch means): ``(α1·mean((D3(x)-1)²) + α2·mean(D3(G3(z))²) + α3·mean((D3(G3(z)) - D2(G3(z)))²)) / Σα``.

    ``d2_fake`` is D2's probability for the same fakes; it is a target here, so it is detached.
    """
    a1, a2, a3 = check_weights("alpha", alpha, 3)
    d2 = d2_fake.detach().float()
    total = a1 * _msq(d3_real, 1.0) + a2 * _msq(d3_fake, 0.0)
    if a3:
        total = total + a3 * (d3_fake.float() - d2).pow(2).mean()
    return total / (a1 + a2 + a3)


def phase3_g_loss(
    d3_fake: torch.Tensor,
    d2_fake: torch.Tensor,
    beta: Sequence[float] = BETA_DEFAULT,
    f: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """L_G3 (batch means): ``(β1·mean((D3(G3(z))-1)²) + β2·mean((f(D2(G3(z)))-1)²)) / Σβ``.

    Gradients flow through ``d2_fake`` into the generator (D2 itself is frozen by the caller).
    """
    b1, b2 = check_weights("beta", beta, 2)
    f = f or identity
    total = b1 * _msq(d3_fake, 1.0)
    if b2:
        total = total + b2 * _msq(f(d2_fake.float()), 1.0)
    return total / (b1 + b2)


# ---------------------------------------------------------------------------------------------- f
def identity(p: torch.Tensor) -> torch.Tensor:
    """``f(p) = p``: the baseline; the G3 loss term is ``(D2(G3(z)) - 1)²``."""
    return p


def hinge(p: torch.Tensor, tau: float = 0.9) -> torch.Tensor:
    """``f(p) = min(p / tau, 1)``: the term ``(f(p) - 1)²`` is zero (and has zero gradient) once
    D2 is at least ``tau`` sure the feature is present, so G3 stops pushing on D2 there instead of
    drifting towards whatever makes D2 output exactly 1 (an adversarial direction of a frozen
    classifier). Below ``tau`` it behaves like the identity scaled by ``1/tau``.
    """
    return torch.clamp(p / tau, max=1.0)


F_FUNCTIONS = ("identity", "hinge")


def make_f(name: str = "identity", tau: float = 0.9) -> Callable[[torch.Tensor], torch.Tensor]:
    """The configurable ``f`` of L_G3 by name: ``identity`` or ``hinge`` (with ``tau`` in (0, 1])."""
    if name == "identity":
        return identity
    if name == "hinge":
        if not 0.0 < tau <= 1.0:
            raise ConfigError(f"f_tau must be in (0, 1], got {tau}")
        return lambda p: hinge(p, tau)
    raise ConfigError(f"f must be one of {F_FUNCTIONS}, got {name!r}")


# ---------------------------------------------------------------------------------------------- StyleGAN2-ADA
def logistic_g_loss(fake_logits: Tensor) -> Tensor:
    """The non-saturating logistic G loss ``mean(softplus(-D(G(z))))`` (``Gmain``)."""
    return F.softplus(-fake_logits).mean()


def logistic_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The logistic D loss ``mean(softplus(D(G(z))) + softplus(-D(x)))`` (``Dmain``); both batches
    have the same size, as in the official loop."""
    return (F.softplus(fake_logits) + F.softplus(-real_logits)).mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """R1: per-sample ``|d sum(D(.)) / d x_i|^2`` ``[B]``, differentiable (double backward).

    ``real_images`` is the leaf the gradient is taken with respect to and must require grad. As in the
    official StyleGAN2-ADA loss it is the *un-augmented* real batch: ``real_logits`` is
    ``D(augment(real_images))``, so the gradient passes back through the augmentation.
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty: real_images must require grad (the gradient is taken with respect to it)")
    (grads,) = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_images], create_graph=True)
    return grads.square().sum(dim=list(range(1, grads.ndim)))


def path_length_penalty(
    images: Tensor, ws: Tensor, pl_mean: Tensor, decay: float = 0.01, noise: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Path-length regularisation of StyleGAN2.

    ``y ~ N(0, 1) / sqrt(H*W)`` (or ``noise``); ``L_i = sqrt(mean_k |d sum(G(w)_i * y_i) / d w_ik|^2)``;
    ``a' = a + decay * (mean(L) - a)``. Returns ``(penalty [B] = (L - a')^2, L [B], a')``; ``a'`` is
    detached. ``ws`` ``[B, num_ws, w_dim]`` must be part of the graph of ``images``.
    """
    if noise is None:
        noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grads,) = torch.autograd.grad(outputs=[(images * noise).sum()], inputs=[ws], create_graph=True)
    lengths = grads.square().sum(dim=2).mean(dim=1).sqrt()
    new_mean = pl_mean.lerp(lengths.mean().to(pl_mean.dtype), decay)
    penalty = (lengths - new_mean).square()
    return penalty, lengths, new_mean.detach()
