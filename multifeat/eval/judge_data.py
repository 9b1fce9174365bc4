"""What the attribute evaluator is trained and measured on besides clean faces.

Generated images are often smeared, noisy, checkered or off-colour; a judge trained on clean faces
alone reports features in them (even in pure noise). The robust recipe of
:class:`multifeat.eval.evaluator.AttributeEvaluator` therefore trains on :func:`robust_batch` es:

- :func:`degraded_view`: blur, noise, down/up-sampling, JPEG, checkerboard overlay or colour shift of
  a face, which **keeps its labels**;
- :func:`nonface_images`: noise, checkerboards, colour blobs, smeared faces and samples of untrained
  DCGAN generators, **negatives of every attribute**;
- optionally (the evaluator's ``geometric``), :func:`geometric_views`: faces zoomed, moved and turned a
  little, which **keep their labels**, so a judge of real faces does not read features at fixed
  positions of the frame it was trained on.

:func:`balanced_accuracy`, :func:`nonface_rates` and :func:`degradation_accuracy` measure how far a
judge can be trusted (``benchmarks/judge_robustness.py`` prints them as a table).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from multifeat.errors import ConfigError

#: Label-keeping degradations: the evaluator is trained on such views of labelled faces (the labels
#: stay) and :func:`degradation_accuracy` measures it on each of them.
VIEW_DEGRADATIONS: tuple[str, ...] = ("blur", "noise", "downsample", "jpeg", "checkerboard", "colour")

#: Images that are not faces; the evaluator is trained with them as negatives of every attribute.
NONFACE_KINDS: tuple[str, ...] = ("noise", "checkerboard", "blobs", "smear", "generator")


def _check_strength(strength: float) -> float:
    s = float(strength)
    if not 0.0 <= s <= 1.0:
        raise ConfigError(f"degradation strength must be in [0, 1], got {strength}")
    return s


def _uniform(generator: torch.Generator | None, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def _randint(generator: torch.Generator | None, low: int, high: int) -> int:
    """An integer in [low, high] (both included)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _checker(size: int, cell: int, phase_y: int = 0, phase_x: int = 0) -> torch.Tensor:
    """``[S, S]`` of +1/-1 squares ``cell`` pixels wide, shifted by the phases."""
    r = (torch.arange(size) + phase_y) // cell
    c = (torch.arange(size) + phase_x) // cell
    return ((r[:, None] + c[None, :]) % 2).float() * 2 - 1


def _jpeg_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode ``[N,3,S,S]`` in [-1, 1] as 8-bit JPEG (Pillow, 4:2:0 chroma) at ``quality`` and decode it."""
    import io

    import numpy as np
    from PIL import Image

    u8 = x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for img in u8:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def degraded_view(images: torch.Tensor, kind: str, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A degraded copy of ``images`` ([3,S,S] or [N,3,S,S] in [-1, 1]) that still shows the same face.

    ``strength`` in [0, 1]; for side S:

    - ``blur``: Gaussian, sigma ``(0.5 + 2.5 s) * S / 64`` px (:func:`multifeat.data.degrade.degrade`);
    - ``noise``: additive Gaussian noise, std ``0.05 + 0.45 s`` (ibid.);
    - ``downsample``: area-shrink to ``S / (2 + 3 s)`` px and enlarge back bilinearly (ibid., strength ``s / 2``);
    - ``jpeg``: JPEG round trip at quality ``round(95 - 85 s)`` (Pillow's encoder);
    - ``checkerboard``: an additive +/-``(0.08 + 0.32 s)`` checkerboard of 1 or 2 px cells in a random colour
      (the transposed-convolution artefact of GAN samples);
    - ``colour``: per-channel gain ``1 +/- 0.4 s`` and offset ``+/- 0.25 s`` (on [0, 1] values) and a
      saturation change, then clamped.
    """
    from multifeat.data.degrade import degrade

    s = _check_strength(strength)
    single = images.ndim == 3
    x = (images.unsqueeze(0) if single else images).float().cpu()
    n, _, size, _ = x.shape
    if kind in ("blur", "noise"):
        y = degrade(x, kind, s, generator=generator)
    elif kind == "downsample":
        y = degrade(x, "downsample", s / 2.0)
    elif kind == "jpeg":
        y = _jpeg_round_trip(x, quality=int(round(95 - 85 * s)))
    elif kind == "checkerboard":
        alpha = 0.08 + 0.32 * s
        out = []
        for _ in range(n):
            cell = _randint(generator, 1, 2)
            pattern = _checker(size, cell, _randint(generator, 0, 1), _randint(generator, 0, 1))
            colour = _uniform(generator, 3, low=0.5, high=1.0) * torch.where(_uniform(generator, 3) < 0.5, -1.0, 1.0)
            out.append(alpha * colour[:, None, None] * pattern)
        y = (x + torch.stack(out)).clamp(-1, 1)
    elif kind == "colour":
        v = (x + 1) / 2
        gain = _uniform(generator, n, 3, 1, 1, low=1 - 0.4 * s, high=1 + 0.4 * s)
        offset = _uniform(generator, n, 3, 1, 1, low=-0.25 * s, high=0.25 * s)
        v = v * gain + offset
        grey = v.mean(dim=1, keepdim=True)
        sat = _uniform(generator, n, 1, 1, 1, low=1 - 0.7 * s, high=1 + 0.5 * s)
        v = grey + sat * (v - grey)
        y = (v.clamp(0, 1) * 2 - 1)
    else:
        raise ConfigError(f"unknown degradation {kind!r}; valid: {', '.join(VIEW_DEGRADATIONS)}")
    return y[0] if single else y


def nonface_images(
    n: int,
    size: int,
    kind: str,
    generator: torch.Generator | None = None,
    faces: torch.Tensor | None = None,
) -> torch.Tensor:
    """``n`` images ``[n, 3, size, size]`` in [-1, 1] that are not faces, of one ``kind``:

    - ``noise``: white Gaussian noise (std 0.2-1 around a random colour), uniform noise, or low-frequency
      noise (Gaussian at S/8-S/2 px, enlarged bilinearly), one of the three per image;
    - ``checkerboard``: two random colours in squares of 1 px to S/4 px, random phase;
    - ``blobs``: a random background with 1-6 soft elliptic blobs of random colours, sizes and places;
    - ``smear``: ``faces`` (or colour blobs when none are given) shrunk to 2 .. max(2, S/10) px and
      enlarged back bilinearly, plus faint noise and, half of the time, a strong checkerboard of 1-2 px
      squares (amplitude 0.1-0.6, random colour): a face-coloured smudge with no readable detail, as
      an early generator draws it;
    - ``generator``: samples of freshly initialised DCGAN generators (random widths, weights
      N(0, sigma) with sigma in [0.02, 0.3], normalisation scales 1 + N(0, sigma), batch-norm in
      training mode, four images per generator):
      the textures, colour casts and transposed-convolution checkerboards of an untrained generator.
    """
    if kind not in NONFACE_KINDS:
        raise ConfigError(f"unknown non-face kind {kind!r}; valid: {', '.join(NONFACE_KINDS)}")
    n, size = int(n), int(size)
    if n <= 0:
        return torch.zeros(0, 3, size, size)
    out = []
    if kind == "generator":
        from multifeat.nets.dcgan import DCGANGenerator

        for start in range(0, n, 4):
            k = min(4, n - start)
            g = DCGANGenerator(z_dim=32, image_size=size, width=4 * 2 ** _randint(generator, 0, 2), max_width=64)
            sigma = float(_uniform(generator, 1, low=0.02, high=0.3))
            with torch.no_grad():
                for name, prm in g.named_parameters():
                    scale_param = prm.ndim == 1 and name.endswith("weight")  # a normalisation's scale: around 1
                    prm.copy_(torch.randn(prm.shape, generator=generator) * sigma + (1.0 if scale_param else 0.0))
                out.append(g.train()(torch.randn(max(k, 2), 32, generator=generator))[:k].float())
        return torch.cat(out).clamp(-1, 1)
    if kind == "smear":
        src = faces.float().cpu() if faces is not None and faces.shape[0] > 0 else nonface_images(n, size, "blobs", generator)
        if src.shape[-1] != size:
            src = F.interpolate(src, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        for _ in range(n):
            img = src[_randint(generator, 0, src.shape[0] - 1)][None]
            k = _randint(generator, 2, max(2, size // 10))
            small = F.interpolate(img, size=(k, k), mode="area")
            big = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)[0]
            big = big + float(_uniform(generator, 1, high=0.08)) * torch.randn(3, size, size, generator=generator)
            if float(_uniform(generator, 1)) < 0.5:  # the strong checkerboard of an early transposed-conv generator
                cell = _randint(generator, 1, 2)
                colour = _uniform(generator, 3, low=-1.0, high=1.0)
                big = big + float(_uniform(generator, 1, low=0.1, high=0.6)) * colour[:, None, None] * _checker(
                    size, cell, _randint(generator, 0, 1), _randint(generator, 0, 1))
            out.append(big.clamp(-1, 1))
        return torch.stack(out)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    for _ in range(n):
        if kind == "noise":
            which = _randint(generator, 0, 2)
            if which == 0:
                mean = _uniform(generator, 3, 1, 1, low=-0.6, high=0.6)
                img = mean + float(_uniform(generator, 1, low=0.2, high=1.0)) * torch.randn(3, size, size, generator=generator)
            elif which == 1:
                img = _uniform(generator, 3, size, size, low=-1.0, high=1.0)
            else:
                k = max(2, size // (2 ** _randint(generator, 1, 3)))
                low = torch.randn(1, 3, k, k, generator=generator) * float(_uniform(generator, 1, low=0.3, high=1.0))
                img = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0]
        elif kind == "checkerboard":
            cell = 2 ** _randint(generator, 0, max(0, int(math.log2(size)) - 2))
            pattern = _checker(size, cell, _randint(generator, 0, cell), _randint(generator, 0, cell))
            a, b = _uniform(generator, 3, low=-1.0, high=1.0), _uniform(generator, 3, low=-1.0, high=1.0)
            img = torch.where(pattern[None] > 0, a[:, None, None], b[:, None, None])
        else:  # blobs
            img = _uniform(generator, 3, 1, 1, low=-1.0, high=1.0).expand(3, size, size).clone()
            for _ in range(_randint(generator, 1, 6)):
                cy, cx = (float(v) for v in _uniform(generator, 2, low=-0.9, high=0.9))
                ry, rx = (float(v) for v in _uniform(generator, 2, low=0.2, high=0.8))
                colour = _uniform(generator, 3, low=-1.0, high=1.0)
                d2 = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
                alpha = torch.sigmoid((1 - d2) * float(_uniform(generator, 1, low=3.0, high=12.0)))
                img = img * (1 - alpha) + colour[:, None, None] * alpha
        out.append(img.clamp(-1, 1))
    return torch.stack(out)


def robust_batch(
    images: torch.Tensor,
    targets: torch.Tensor,
    degrade_prob: float = 0.5,
    nonface_fraction: float = 0.25,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch for a judge that is not fooled by what GANs produce.

    Each image is, with probability ``degrade_prob``, replaced by a :func:`degraded_view` (a random
    kind of :data:`VIEW_DEGRADATIONS`, strength uniform in [0, 1]) **with its targets kept**; then
    ``round(nonface_fraction * N)`` non-face images (:func:`nonface_images`, kinds in turn, the smears
    made from this batch's faces, each degraded likewise with probability ``degrade_prob``) are
    appended **with all targets 0**. Returns ``(images, targets)``
    on the devices and dtypes of the inputs; the batch grows by the non-face images.
    """
    n = images.shape[0]
    x = images.detach().float().cpu().clone()
    for i in range(n):
        if float(_uniform(generator, 1)) < degrade_prob:
            kind = VIEW_DEGRADATIONS[_randint(generator, 0, len(VIEW_DEGRADATIONS) - 1)]
            x[i] = degraded_view(x[i], kind, float(_uniform(generator, 1)), generator)
    m = int(round(nonface_fraction * n))
    if m > 0:
        start = _randint(generator, 0, len(NONFACE_KINDS) - 1)
        kinds = [NONFACE_KINDS[(start + j) % len(NONFACE_KINDS)] for j in range(m)]
        size = x.shape[-1]
        neg = torch.cat([nonface_images(kinds.count(k), size, k, generator, faces=images.detach().float().cpu())
                         for k in NONFACE_KINDS if k in kinds])
        for j in range(m):  # a degraded non-face is still no face
            if float(_uniform(generator, 1)) < degrade_prob:
                kind = VIEW_DEGRADATIONS[_randint(generator, 0, len(VIEW_DEGRADATIONS) - 1)]
                neg[j] = degraded_view(neg[j], kind, float(_uniform(generator, 1)), generator)
        x = torch.cat([x, neg])
        targets = torch.cat([targets, targets.new_zeros(m, targets.shape[1])])
    return x.to(device=images.device, dtype=images.dtype), targets


#: Defaults of the geometric views (:func:`geometric_views`): zoom factors, largest shift per axis as a
#: fraction of the side, largest rotation in degrees.
GEOMETRIC_SCALE: tuple[float, float] = (0.8, 1.25)
GEOMETRIC_SHIFT: float = 0.1
GEOMETRIC_ROTATE: float = 10.0


def check_geometric(prob: float, scale: Sequence[float], shift: float, rotate: float) -> tuple[float, tuple[float, float], float, float]:
    """The geometric-view settings, checked: ``prob`` in [0, 1], ``scale`` two zoom factors
    ``0.5 <= low <= high <= 2``, ``shift`` in [0, 0.25] of the side, ``rotate`` in [0, 45] degrees."""
    if not 0.0 <= float(prob) <= 1.0:
        raise ConfigError(f"geometric must be a probability in [0, 1], got {prob}")
    sc = tuple(float(v) for v in scale)
    if len(sc) != 2 or not 0.5 <= sc[0] <= sc[1] <= 2.0:
        raise ConfigError(f"geometric_scale must be [low, high] zoom factors with 0.5 <= low <= high <= 2, got {list(scale)}")
    if not 0.0 <= float(shift) <= 0.25:
        raise ConfigError(f"geometric_shift must be in [0, 0.25] (a fraction of the image side), got {shift}")
    if not 0.0 <= float(rotate) <= 45.0:
        raise ConfigError(f"geometric_rotate must be in [0, 45] degrees, got {rotate}")
    return float(prob), (sc[0], sc[1]), float(shift), float(rotate)


def mirrored(images: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``images`` ``[N,3,S,S]`` with each one mirrored left-right with probability ``prob`` (a new
    tensor; the draws come from ``generator``, the global stream when None)."""
    if images.shape[0] == 0 or prob <= 0.0:
        return images.clone()
    flip = (torch.rand(images.shape[0], generator=generator) < prob).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def geometric_views(
    images: torch.Tensor,
    prob: float = 1.0,
    scale: Sequence[float] = GEOMETRIC_SCALE,
    shift: float = GEOMETRIC_SHIFT,
    rotate: float = GEOMETRIC_ROTATE,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``images`` ``[N,3,S,S]`` in [-1, 1], each shown with probability ``prob`` in a random framing
    (same shape; the others unchanged). The labels stay: a bald head zoomed or moved is still bald.

    Per image: a zoom factor log-uniform in ``scale`` (above 1: the face enlarged), a shift uniform in
    ``[-shift, shift]`` of the side on each axis, a rotation uniform in ``[-rotate, rotate]`` degrees;
    bilinear resampling of the whole batch at once (``affine_grid``/``grid_sample``), the uncovered
    border filled by replicating the edge or by mirroring (one of the two per image). All draws come
    from ``generator`` (the global stream when None), so a seed fixes the views.
    """
    prob, (lo, hi), shift, rotate = check_geometric(prob, scale, shift, rotate)
    n = images.shape[0]
    if n == 0 or prob == 0.0:  # nothing drawn: the random stream is untouched
        return images.clone()
    x = images.detach().float()
    draws = torch.rand(n, 6, generator=generator).to(x.device)  # apply, zoom, dx, dy, angle, padding
    zoom = torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * draws[:, 1])
    t = (2 * draws[:, 2:4] - 1) * shift * 2  # normalised coordinates span 2 per side
    angle = (2 * draws[:, 4] - 1) * math.radians(rotate)
    a = torch.stack([torch.stack([torch.cos(angle), -torch.sin(angle)], 1),
                     torch.stack([torch.sin(angle), torch.cos(angle)], 1)], 1) / zoom[:, None, None]
    # output point p samples the input at A (p - t), A = R(angle) / zoom: the content is turned and zoomed
    # about the centre, and the centre lands on t (a move of t whatever the zoom)
    theta = torch.cat([a, -(a @ t[:, :, None])], 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    border = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mirror = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    y = torch.where((draws[:, 5] < 0.5)[:, None, None, None], border, mirror).clamp(-1, 1)
    y = torch.where((draws[:, 0] < prob)[:, None, None, None], y, x)
    return y.to(dtype=images.dtype)


# ---------------------------------------------------------------------- measuring the judge


def balanced_accuracy(probs: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> list[float]:
    """Per column: (true-positive rate + true-negative rate) / 2 (NaN where a class is absent)."""
    pred = probs >= threshold
    t = targets >= 0.5
    out = []
    for a in range(t.shape[1]):
        pos, neg = t[:, a], ~t[:, a]
        if not pos.any() or not neg.any():
            out.append(float("nan"))
            continue
        out.append(0.5 * (float(pred[pos, a].float().mean()) + float((~pred[neg, a]).float().mean())))
    return out


def balanced_accuracy_interval(
    probs: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5, level: float = 0.95
) -> list[tuple[float, float]]:
    """Per column: a ``level`` confidence interval ``(low, high)`` of :func:`balanced_accuracy`.

    The true-positive rate (``k_pos`` of ``n_pos`` positives found) and the true-negative rate each get
    a Wilson interval at ``1 - (1 - level) / 2`` (97.5 % for 95 %); the bounds of the balanced accuracy
    are the means of the two lower and of the two upper bounds. Both rates lie in their intervals
    together with probability at least ``level`` (Bonferroni), so the interval is conservative; it
    stays informative when a rate is 0 or 1. NaN bounds where a class is absent.
    """
    from statistics import NormalDist

    from multifeat.eval.metrics import wilson_interval

    if not 0.0 < float(level) < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    z = NormalDist().inv_cdf(1 - (1 - float(level)) / 4)
    pred, t = probs >= threshold, targets >= 0.5
    out = []
    for a in range(t.shape[1]):
        pos, neg = t[:, a], ~t[:, a]
        if not pos.any() or not neg.any():
            out.append((float("nan"), float("nan")))
            continue
        tp_lo, tp_hi = wilson_interval(int(pred[pos, a].sum()), int(pos.sum()), z)
        tn_lo, tn_hi = wilson_interval(int((~pred[neg, a]).sum()), int(neg.sum()), z)
        out.append((0.5 * (tp_lo + tn_lo), 0.5 * (tp_hi + tn_hi)))
    return out


def auroc_per_column(probs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per column: the area under the ROC curve, the probability that a random positive scores above a
    random negative (ties count half); NaN where a class is absent. Rank formula (Mann-Whitney U)."""
    out = []
    for a in range(targets.shape[1]):
        t = targets[:, a] >= 0.5
        n_pos, n_neg = int(t.sum()), int((~t).sum())
        if n_pos == 0 or n_neg == 0:
            out.append(float("nan"))
            continue
        _, inverse, counts = torch.unique(probs[:, a].double(), return_inverse=True, return_counts=True)
        end = torch.cumsum(counts, 0).double()
        ranks = ((end - counts + 1 + end) / 2)[inverse]  # 1-based ranks; tied scores share their mean rank
        u = float(ranks[t].sum()) - n_pos * (n_pos + 1) / 2
        out.append(u / (n_pos * n_neg))
    return out


def nonface_rates(
    evaluator: Any,
    n: int = 200,
    seed: int = 123,
    kinds: Sequence[str] = ("noise", "checkerboard", "blobs"),
    size: int | None = None,
    threshold: float = 0.5,
) -> dict[str, dict[str, float]]:
    """How often the evaluator reports each attribute on ``n`` non-face images of each kind:
    ``{kind: {attribute: rate}}``. Images drawn with their own generator (``seed``); the global RNG is untouched."""
    g = torch.Generator().manual_seed(int(seed))
    size = int(size or evaluator.image_size)
    out = {}
    for kind in kinds:
        p = evaluator.predict_proba(nonface_images(n, size, kind, g))
        out[kind] = {a: float((p[:, i] >= threshold).float().mean()) for i, a in enumerate(evaluator.attributes)}
    return out


def degradation_accuracy(
    evaluator: Any,
    images: torch.Tensor,
    targets: torch.Tensor,
    strength: float = 0.5,
    seed: int = 321,
    kinds: Sequence[str] = VIEW_DEGRADATIONS,
    threshold: float = 0.5,
) -> dict[str, dict[str, float]]:
    """Accuracy per attribute on clean ``images`` and on each degraded view of them (same labels):
    ``{"clean" | kind: {attribute: accuracy}}``; ``targets`` in the evaluator's attribute order."""
    g = torch.Generator().manual_seed(int(seed))
    out = {}
    for kind in ("clean", *kinds):
        x = images if kind == "clean" else degraded_view(images, kind, strength, g)
        pred = evaluator.predict_proba(x) >= threshold
        acc = (pred == (targets >= 0.5)).float().mean(0)
        out[kind] = {a: float(acc[i]) for i, a in enumerate(evaluator.attributes)}
    return out


__all__ = [
    "GEOMETRIC_ROTATE",
    "GEOMETRIC_SCALE",
    "GEOMETRIC_SHIFT",
    "NONFACE_KINDS",
    "VIEW_DEGRADATIONS",
    "auroc_per_column",
    "balanced_accuracy",
    "balanced_accuracy_interval",
    "check_geometric",
    "degradation_accuracy",
    "degraded_view",
    "geometric_views",
    "nonface_images",
    "nonface_rates",
    "robust_batch",
]
