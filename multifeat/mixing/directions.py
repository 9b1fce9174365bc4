"""Latent directions: a linear boundary per attribute in W, learned from classifier-labelled samples.

Learning (InterFaceGAN-style): sample ``z``, map to ``w``, draw the images, label each image with the
attribute's classifier (probability >= ``threshold``), and fit a logistic regression ``w -> label``
(full batch L-BFGS, L2 weight ``l2`` on the normal, inputs centred and divided by one global scale so the
direction is that of W itself). The result is a unit ``normal`` and a ``bias`` such that
``score(w) = normal . w + bias`` is the signed Euclidean distance of ``w`` to the boundary (positive =
attribute present).

Composition: moving along one attribute's normal generally moves the others' scores too (normals of
correlated attributes are not orthogonal). :func:`orthogonalize` offers two remedies:

* ``conditional`` (default): each edit vector is its normal with the span of all *other* normals
  projected out (then renormalised). Moving along it leaves every other attribute's boundary score
  ``n_j . w + b_j`` exactly unchanged, so adding one edit cannot undo another.
* ``gram_schmidt``: Gram-Schmidt in the given order; the edit vectors are orthonormal (pairwise dot
  products 0) and moving along one leaves the projections ``e_j . w`` on the others unchanged, but later
  edits may still move earlier attributes' boundary scores.

For two or more non-orthogonal normals no set of vectors has both properties at once; choose by what
must be preserved. :func:`edit` adds ``sum_k amount_k * e_k`` to ``w`` (all layers, or chosen ones).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from multifeat.errors import ConfigError, DataError

__all__ = ["ORTHOGONALIZE_MODES", "LatentDirection", "edit_ws", "fit_linear_boundary", "learn_directions", "orthogonalize"]

ORTHOGONALIZE_MODES = ("conditional", "gram_schmidt", "none")


@dataclass
class LatentDirection:
    """A linear attribute boundary in W: ``score(w) = normal . w + bias`` (signed distance).

    Attributes:
        name: attribute name. normal: ``[w_dim]`` unit vector. bias: float.
        accuracy: training accuracy of the boundary on the labelled samples.
        num_positive / num_negative: label counts.
    """

    name: str
    normal: Tensor
    bias: float
    accuracy: float = float("nan")
    num_positive: int = 0
    num_negative: int = 0

    def score(self, w: Tensor) -> Tensor:
        """Signed distance ``[N]`` of ``w [N, w_dim]`` (or the layer mean of ``ws [N, L, w_dim]``)."""
        if w.ndim == 3:
            w = w.mean(dim=1)
        return w.float() @ self.normal.to(w.device) + self.bias

    def to_dict(self) -> dict:
        return {"name": self.name, "normal": self.normal.detach().cpu(), "bias": self.bias, "accuracy": self.accuracy,
                "num_positive": self.num_positive, "num_negative": self.num_negative}


def fit_linear_boundary(w: Tensor, labels: Tensor, l2: float = 1e-4, max_iter: int = 200) -> tuple[Tensor, float, float]:
    """Logistic regression of ``labels [N]`` (0/1) on ``w [N, D]``; returns ``(unit normal [D], bias, accuracy)``
    with ``normal . w + bias`` the signed distance to the decision boundary."""
    w = w.detach().float()
    y = labels.detach().float().to(w.device)
    if w.ndim != 2 or y.shape != (w.shape[0],):
        raise ConfigError(f"need w [N, D] and labels [N]; got {tuple(w.shape)} and {tuple(y.shape)}")
    mu = w.mean(dim=0)
    scale = float((w - mu).square().mean().sqrt().clamp_min(1e-12))
    x = (w - mu) / scale
    v = torch.zeros(w.shape[1], device=w.device, requires_grad=True)
    c = torch.zeros((), device=w.device, requires_grad=True)
    opt = torch.optim.LBFGS([v, c], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(x @ v + c, y) + l2 * v.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    v, c = v.detach(), c.detach()
    norm = float(v.norm())
    if not norm > 0:
        raise DataError("the labelled samples gave no linear boundary (the fitted normal is zero)")
    normal = v / norm
    bias = float(-(normal @ mu) + c * scale / norm)
    acc = float(((x @ v + c > 0).float() == y).float().mean())
    return normal, bias, acc


@torch.no_grad()
def learn_directions(
    G: nn.Module,
    classifiers: Mapping[str, Callable[[Tensor], Tensor]],
    num_samples: int = 2000,
    seed: int = 0,
    threshold: float = 0.5,
    truncation_psi: float = 1.0,
    batch_size: int = 64,
    c: Tensor | None = None,
    l2: float = 1e-4,
) -> dict[str, LatentDirection]:
    """One :class:`LatentDirection` per classifier, from ``num_samples`` shared samples.

    ``classifiers``: name -> ``images [N, C, R, R] in [-1, 1] -> probabilities [N]``. Raises
    ``DataError`` if a classifier labels fewer than 2 samples on either side.
    """
    if num_samples < 4:
        raise ConfigError(f"num_samples must be >= 4, got {num_samples}")
    if not classifiers:
        raise ConfigError("give at least one classifier (name -> images -> probabilities)")
    device = next(G.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    ws_all, probs = [], {name: [] for name in classifiers}
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        z = torch.randn(n, G.z_dim, generator=gen).to(device)
        cc = None
        if getattr(G, "c_dim", 0):
            if c is None:
                raise ConfigError(f"this generator is conditional (c_dim={G.c_dim}); give a label c [{G.c_dim}]")
            cc = c.to(device, torch.float32).reshape(1, -1).expand(n, -1)
        ws = G.mapping(z, cc, truncation_psi=truncation_psi)
        img = G.synthesis(ws, noise_mode="const").clamp(-1, 1)
        ws_all.append(ws[:, 0].float())
        for name, fn in classifiers.items():
            p = fn(img)
            probs[name].append(torch.as_tensor(p).reshape(n).float().to(device))
    w = torch.cat(ws_all)
    out = {}
    for name in classifiers:
        labels = (torch.cat(probs[name]) >= threshold).float()
        pos = int(labels.sum())
        neg = labels.numel() - pos
        if pos < 2 or neg < 2:
            raise DataError(
                f"classifier '{name}' labelled {pos} of {labels.numel()} samples positive (threshold {threshold}); "
                "a boundary needs both classes: draw more samples or check the classifier"
            )
        normal, bias, acc = fit_linear_boundary(w, labels, l2=l2)
        out[name] = LatentDirection(name, normal.cpu(), bias, acc, pos, neg)
    return out


def orthogonalize(normals: Mapping[str, Tensor] | Sequence[Tensor], mode: str = "conditional", eps: float = 1e-6) -> dict:
    """Edit vectors (unit length) from normals (see module doc). Returns a dict in the input order
    (keys = names, or 0..k-1 for a sequence)."""
    if mode not in ORTHOGONALIZE_MODES:
        raise ConfigError(f"mode must be one of {ORTHOGONALIZE_MODES}, got {mode!r}")
    items = list(normals.items()) if isinstance(normals, Mapping) else list(enumerate(normals))
    if not items:
        return {}
    names = [k for k, _ in items]
    n = torch.stack([torch.as_tensor(v).float().flatten() for _, v in items])
    n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out: dict = {}
    if mode == "none":
        return {name: n[i] for i, name in enumerate(names)}
    if mode == "gram_schmidt":
        basis: list[Tensor] = []
        for i, name in enumerate(names):
            e = n[i].clone()
            for b in basis:
                e = e - (e @ b) * b
            if float(e.norm()) < eps:
                raise ConfigError(f"direction '{name}' lies in the span of the ones before it; it cannot be made orthogonal")
            e = e / e.norm()
            basis.append(e)
            out[name] = e
        return out
    for i, name in enumerate(names):
        others = torch.cat([n[:i], n[i + 1 :]])
        e = n[i].clone()
        if others.shape[0]:
            q, _ = torch.linalg.qr(others.T)  # orthonormal basis of the others' span, [D, k-1]
            e = e - q @ (q.T @ e)
        if float(e.norm()) < eps:
            raise ConfigError(f"direction '{name}' lies in the span of the other directions; it cannot be edited on its own")
        out[name] = e / e.norm()
    return out


def edit_ws(ws: Tensor, amounts: Mapping[str, float], vectors: Mapping[str, Tensor], layers: Sequence[int] | None = None) -> Tensor:
    """``ws + sum_k amounts[k] * vectors[k]`` on all layers (``ws [N, L, D]``) or only ``layers``;
    ``ws`` may also be ``[N, D]``."""
    unknown = [k for k in amounts if k not in vectors]
    if unknown:
        raise ConfigError(f"no direction named {unknown[0]!r}; known: {', '.join(map(str, vectors)) or 'none'}")
    delta = torch.zeros(ws.shape[-1], device=ws.device, dtype=ws.dtype)
    for k, a in amounts.items():
        delta = delta + float(a) * vectors[k].to(ws.device, ws.dtype)
    if ws.ndim == 2:
        return ws + delta
    if layers is None:
        return ws + delta
    mask = torch.zeros(ws.shape[1], 1, device=ws.device, dtype=ws.dtype)
    mask[list(layers)] = 1
    return ws + mask * delta
