"""Attribute-guided style mixing: choose the layers that make the mix carry feature 1 AND feature 2.

For each pair of styles ``(a_i, b_i)`` (``a`` expected to bring feature 1, ``b`` feature 2) every
candidate layer set ``S`` (the layers taken from ``a``; the others from ``b``) is scored by

    objective = combine(p1(mix), p2(mix)) - penalty_weight * penalty(mix)

* ``p1``, ``p2``: the classifiers' probabilities of feature 1 and feature 2 for the mixed image.
* ``combine``: ``product`` (default, ``p1 * p2``: the probability that both are present if the
  judgements are independent), ``min`` (the weaker feature), or ``log`` (``log p1 + log p2``, which ranks
  like the product for one pair but punishes a near-zero feature harder when averaged over pairs).
* ``penalty`` keeps the mix close to its sources: ``image`` space (default) ``(d(mix, a) + d(mix, b)) / 2``
  with the image distance ``d`` (a mix that drifts away from both faces costs); ``w`` space
  ``(|ws_mix - ws_a|^2 + |ws_mix - ws_b|^2) / (2 |ws_a - ws_b|^2)`` (squared norms over all layers). With
  hard layer selection the ``w`` penalty is the same (1/2) for every candidate, so it only matters
  for the interpolation refinement below. ``penalty_weight`` defaults to 0.1.

Candidates (``search``):

* ``cutoffs``: ``a`` on ``0..K-1`` and ``b`` on ``K..`` (the official mixing cut), and the reverse, for
  ``K = 1..num_ws-1``;
* ``ranges`` (default): ``a`` on any contiguous range ``s..e-1`` and ``b`` elsewhere, or ``b`` on a
  contiguous range and ``a`` elsewhere (proper, non-empty subsets only; duplicates removed). This
  includes every cutoff.

Optionally (``refine_steps > 0``) the best candidate is refined by gradient ascent on per-layer
interpolation weights ``alpha = sigmoid(theta)`` in [0, 1] (``ws = b + alpha (a - b)``), starting at
``alpha = sigmoid(+-3)`` on the chosen split; this needs differentiable classifiers.

Ties are broken towards the candidate listed first (cutoffs first, then ranges by start and length).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from multifeat.errors import ConfigError
from multifeat.mixing.layers import mix_ws
from multifeat.mixing.projection import synthesize

__all__ = ["COMBINES", "GuidedMixResult", "candidate_masks", "combine_scores", "guided_search"]

COMBINES = ("product", "min", "log")
SEARCHES = ("cutoffs", "ranges")
PENALTY_SPACES = ("image", "w")


def combine_scores(p1: Tensor, p2: Tensor, combine: str = "product") -> Tensor:
    """Joint score of two probabilities (see module doc); ``log`` clamps at 1e-6."""
    if combine == "product":
        return p1 * p2
    if combine == "min":
        return torch.minimum(p1, p2)
    if combine == "log":
        return p1.clamp_min(1e-6).log() + p2.clamp_min(1e-6).log()
    raise ConfigError(f"combine must be one of {COMBINES}, got {combine!r}")


def candidate_masks(num_ws: int, search: str = "ranges") -> Tensor:
    """Boolean ``[K, num_ws]`` candidate layer sets (True = from ``a``), in the documented order."""
    if search not in SEARCHES:
        raise ConfigError(f"search must be one of {SEARCHES}, got {search!r}")
    if num_ws < 2:
        raise ConfigError(f"a generator with {num_ws} layer(s) cannot mix styles")
    rows: list[tuple[bool, ...]] = []
    idx = torch.arange(num_ws)
    for k in range(1, num_ws):
        rows.append(tuple((idx < k).tolist()))
        rows.append(tuple((idx >= k).tolist()))
    if search == "ranges":
        for s in range(num_ws):
            for e in range(s + 1, num_ws + 1):
                inside = (idx >= s) & (idx < e)
                rows.append(tuple(inside.tolist()))
                rows.append(tuple((~inside).tolist()))
    seen: set[tuple[bool, ...]] = set()
    out = []
    for r in rows:
        if r in seen or all(r) or not any(r):
            continue
        seen.add(r)
        out.append(r)
    return torch.tensor(out, dtype=torch.bool)


@dataclass
class GuidedMixResult:
    """Result of :func:`guided_search`.

    Attributes:
        ws: ``[P, num_ws, w_dim]`` the chosen mix of every pair (refined when refinement ran).
        images: ``[P, C, R, R]`` their images in [-1, 1].
        masks: ``[P, num_ws]`` chosen layer sets (True = from ``a``).
        alphas: ``[P, num_ws]`` refined interpolation weights (None without refinement).
        pairs: per pair a JSON-able dict (layers, p1, p2, penalty, objective, refined values).
        candidates: every candidate with its mean scores over the pairs, best first.
        best_shared: the single candidate with the highest mean objective over all pairs.
        settings: the search settings.
    """

    ws: Tensor
    images: Tensor
    masks: Tensor
    alphas: Tensor | None
    pairs: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    best_shared: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no tensors)."""
        return {"settings": self.settings, "pairs": self.pairs, "best_shared": self.best_shared, "candidates": self.candidates}


def _layers(mask: Tensor) -> list[int]:
    return [int(i) for i in torch.nonzero(mask).flatten()]


def guided_search(
    G: nn.Module,
    ws_a: Tensor,
    ws_b: Tensor,
    score_1: Callable[[Tensor], Tensor],
    score_2: Callable[[Tensor], Tensor],
    distance: nn.Module | None = None,
    *,
    noise_a: dict[str, Tensor] | None = None,
    noise_b: dict[str, Tensor] | None = None,
    noise_layer_index: dict[str, int] | None = None,
    search: str = "ranges",
    combine: str = "product",
    penalty_weight: float = 0.1,
    penalty_space: str = "image",
    refine_steps: int = 0,
    refine_lr: float = 0.05,
    batch_size: int = 32,
) -> GuidedMixResult:
    """Search the layer split of every pair ``(ws_a[i], ws_b[i])`` (``[P, num_ws, w_dim]`` each).

    ``score_1`` / ``score_2``: ``images [M, C, R, R] in [-1, 1] -> probabilities [M]``. ``distance``:
    image distance for the ``image`` penalty (required then). ``noise_a`` / ``noise_b``: the pairs'
    noise maps (layer -> ``[P, R, R]``); each noise layer takes the map of the source that supplies its
    ws index (``noise_layer_index``: layer name -> ws index). See the module doc for the objective.
    """
    if ws_a.shape != ws_b.shape or ws_a.ndim != 3:
        raise ConfigError(f"ws_a and ws_b must be [P, num_ws, w_dim] of equal shape; got {tuple(ws_a.shape)}, {tuple(ws_b.shape)}")
    if combine not in COMBINES:
        raise ConfigError(f"combine must be one of {COMBINES}, got {combine!r}")
    if penalty_space not in PENALTY_SPACES:
        raise ConfigError(f"penalty_space must be one of {PENALTY_SPACES}, got {penalty_space!r}")
    if penalty_weight < 0:
        raise ConfigError(f"penalty_weight must be >= 0, got {penalty_weight}")
    if penalty_space == "image" and penalty_weight > 0 and distance is None:
        raise ConfigError("an image-space penalty needs an image distance")
    p_count, num_ws = ws_a.shape[:2]
    device = ws_a.device
    masks = candidate_masks(num_ws, search).to(device)
    k_count = masks.shape[0]

    def render(ws: Tensor, sel: Tensor, ia: Tensor) -> Tensor:
        """Images of mixes ``ws`` for pairs ``ia`` with layer selection ``sel [M, L]`` (bool or weights)."""
        noise = _mixed_noise(noise_a, noise_b, noise_layer_index, sel, ia)
        return synthesize(G, ws, noise).clamp(-1, 1)

    with torch.no_grad():
        img_a = render(ws_a, torch.ones(p_count, num_ws, dtype=torch.bool, device=device), torch.arange(p_count, device=device))
        img_b = render(ws_b, torch.zeros(p_count, num_ws, dtype=torch.bool, device=device), torch.arange(p_count, device=device))
        delta = (ws_a - ws_b).square().sum(dim=(1, 2)).clamp_min(1e-12)

        def evaluate(ws: Tensor, sel: Tensor, ia: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            img = render(ws, sel, ia)
            p1, p2 = _probs(score_1, img), _probs(score_2, img)
            pen = _penalty(ws, img, ws_a[ia], ws_b[ia], img_a[ia], img_b[ia], delta[ia], distance, penalty_space, penalty_weight)
            return p1, p2, pen

        # all (candidate, pair) combinations, candidate-major, in chunks
        flat_k = torch.arange(k_count, device=device).repeat_interleave(p_count)
        flat_p = torch.arange(p_count, device=device).repeat(k_count)
        p1s, p2s, pens = [], [], []
        for start in range(0, flat_k.numel(), batch_size):
            kk, pp = flat_k[start : start + batch_size], flat_p[start : start + batch_size]
            sel = masks[kk]
            p1, p2, pen = evaluate(mix_ws(ws_a[pp], ws_b[pp], sel), sel, pp)
            p1s.append(p1), p2s.append(p2), pens.append(pen)
        p1 = torch.cat(p1s).view(k_count, p_count)
        p2 = torch.cat(p2s).view(k_count, p_count)
        pen = torch.cat(pens).view(k_count, p_count)
        obj = combine_scores(p1, p2, combine) - penalty_weight * pen

    best = obj.argmax(dim=0)  # first maximum: ties go to the earlier candidate
    pidx = torch.arange(p_count, device=device)
    chosen = masks[best]
    ws_mix = mix_ws(ws_a, ws_b, chosen)
    alphas = None
    pairs: list[dict[str, Any]] = []
    for i in range(p_count):
        k = int(best[i])
        pairs.append({
            "pair": i, "layers_from_a": _layers(masks[k]), "layers_from_b": _layers(~masks[k]),
            "p1": float(p1[k, i]), "p2": float(p2[k, i]), "penalty": float(pen[k, i]), "objective": float(obj[k, i]),
        })

    if refine_steps > 0:
        theta = torch.where(chosen, 3.0, -3.0).float().requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=refine_lr)
        for _ in range(refine_steps):
            alpha = torch.sigmoid(theta)
            ws = mix_ws(ws_a, ws_b, alpha)
            img = render(ws, alpha, pidx)
            r1, r2 = _probs(score_1, img), _probs(score_2, img)
            rpen = _penalty(ws, img, ws_a, ws_b, img_a, img_b, delta, distance, penalty_space, penalty_weight)
            loss = -(combine_scores(r1, r2, combine) - penalty_weight * rpen).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            alphas = torch.sigmoid(theta).detach()
            ws_ref = mix_ws(ws_a, ws_b, alphas)
            r1, r2, rpen = evaluate(ws_ref, alphas, pidx)
            robj = combine_scores(r1, r2, combine) - penalty_weight * rpen
        for i in range(p_count):
            pairs[i].update({
                "alpha": [round(float(a), 6) for a in alphas[i]], "p1_refined": float(r1[i]), "p2_refined": float(r2[i]),
                "penalty_refined": float(rpen[i]), "objective_refined": float(robj[i]),
            })
        ws_mix = ws_ref

    with torch.no_grad():
        sel = alphas if alphas is not None else chosen
        images = render(ws_mix, sel, pidx)

    mean_obj = obj.mean(dim=1)
    order = torch.argsort(mean_obj, descending=True, stable=True)
    candidates = [{
        "layers_from_a": _layers(masks[k]), "mean_objective": float(mean_obj[k]),
        "mean_p1": float(p1[k].mean()), "mean_p2": float(p2[k].mean()), "mean_penalty": float(pen[k].mean()),
    } for k in order.tolist()]
    settings = {
        "search": search, "combine": combine, "penalty_weight": float(penalty_weight), "penalty_space": penalty_space,
        "refine_steps": int(refine_steps), "refine_lr": float(refine_lr), "num_candidates": int(k_count),
        "distance": None if distance is None else str(getattr(distance, "name", type(distance).__name__)),
    }
    return GuidedMixResult(ws=ws_mix.detach(), images=images, masks=chosen, alphas=alphas, pairs=pairs,
                           candidates=candidates, best_shared=candidates[0], settings=settings)


def _probs(fn: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    p = fn(images)
    if not isinstance(p, Tensor):
        p = torch.as_tensor(p)
    p = p.to(images.device).float()
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.shape != (images.shape[0],):
        raise ConfigError(f"a classifier must return probabilities [N] = [{images.shape[0]}]; got shape {tuple(p.shape)}")
    return p


def _penalty(ws, img, ws_a, ws_b, img_a, img_b, delta, distance, space: str, weight: float) -> Tensor:
    if weight == 0:
        return ws.new_zeros(ws.shape[0])
    if space == "w":
        da = (ws - ws_a).square().sum(dim=(1, 2))
        db = (ws - ws_b).square().sum(dim=(1, 2))
        return (da + db) / (2 * delta)
    return 0.5 * (distance(img, img_a) + distance(img, img_b))


def _mixed_noise(noise_a, noise_b, layer_index, sel: Tensor, ia: Tensor) -> dict[str, Tensor] | None:
    """Noise maps of mixes: each layer's map from the source of its ws index (weights: interpolated)."""
    if noise_a is None and noise_b is None:
        return None
    if noise_a is None or noise_b is None:
        raise ConfigError("give noise maps for both sources or for neither")
    out = {}
    for name, ma in noise_a.items():
        mb = noise_b[name]
        li = (layer_index or {}).get(name)
        if li is None:
            raise ConfigError(f"no ws index known for noise layer '{name}'")
        s = sel[:, li]
        ma_i, mb_i = ma[ia], mb[ia]
        if s.dtype == torch.bool:
            out[name] = torch.where(s.view(-1, 1, 1), ma_i, mb_i)
        else:
            out[name] = mb_i + s.view(-1, 1, 1) * (ma_i - mb_i)
    return out
