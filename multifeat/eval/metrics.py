"""Evaluation metrics as plain functions of probabilities and feature arrays.

- :func:`presence`, :func:`feature_rates`, :func:`joint_rate`: how often each requested feature, and
  all of them together, are detected (probability >= threshold, default 0.5);
- :func:`wilson_interval`: the Wilson score interval of a binomial proportion (95 % by default);
- :func:`fid_from_stats`, :func:`fid_from_features`: the Fréchet distance written out with NumPy and
  ``scipy.linalg.sqrtm`` (the plain reference);
- :func:`fid_torchmetrics`, :func:`kid_torchmetrics`: torchmetrics' FID and KID on features that were
  already extracted (the feature extractor is chosen in :mod:`multifeat.eval.features`);
- :func:`mean_pairwise_distance`, :func:`diversity`: spread of a set of samples in a feature space,
  and the ratio of the generated set's spread to that of real images.

Shapes: probabilities ``[N, A]`` in [0, 1]; features ``[N, D]``. Tensors or NumPy arrays are accepted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


# --------------------------------------------------------------------------------------------- rates


def presence(probs, threshold: float = 0.5) -> np.ndarray:
    """Boolean ``[N, A]``: feature ``a`` counts as present in image ``n`` when ``probs[n, a] >= threshold``."""
    p = _as_numpy(probs)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2:
        raise ValueError(f"probabilities must have shape [N, A], got {p.shape}")
    return p >= threshold


def feature_rates(probs, names: Sequence[str], threshold: float = 0.5) -> dict[str, float]:
    """Fraction of images in which each feature is present: ``{name: rate}`` (column order = ``names``)."""
    present = presence(probs, threshold)
    if present.shape[1] != len(names):
        raise ValueError(f"got {present.shape[1]} probability columns for {len(names)} names {list(names)}")
    if present.shape[0] == 0:
        return {n: float("nan") for n in names}
    return {n: float(present[:, i].mean()) for i, n in enumerate(names)}


def joint_count(probs, threshold: float = 0.5) -> int:
    """Number of images in which every column's feature is present at once."""
    return int(presence(probs, threshold).all(axis=1).sum())


def joint_rate(probs, threshold: float = 0.5) -> float:
    """Fraction of images in which every column's feature is present at once (NaN for no images)."""
    present = presence(probs, threshold)
    if present.shape[0] == 0:
        return float("nan")
    return float(present.all(axis=1).mean())


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` trials (``z=1.96``: 95 %).

    Unlike the normal approximation it stays inside [0, 1] and is informative at k = 0 or k = n.
    With no trials (``n = 0``) the interval is the uninformative ``(0.0, 1.0)``.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# ----------------------------------------------------------------------------------------------- FID


def mean_and_cov(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (divides by N - 1) of features ``[N, D]``."""
    f = _as_numpy(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features of shape [N >= 2, D], got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def fid_from_stats(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

    The matrix square root is ``scipy.linalg.sqrtm``; if the product is numerically singular the
    covariances are offset by ``eps * I`` first. Tiny imaginary parts from round-off are dropped.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(_as_numpy(mu1)), np.atleast_1d(_as_numpy(mu2))
    s1, s2 = np.atleast_2d(_as_numpy(sigma1)), np.atleast_2d(_as_numpy(sigma2))
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if isinstance(covmean, tuple):  # older scipy returned (sqrtm, error estimate) with disp=False
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid_from_features(features_a, features_b) -> float:
    """Plain FID between two feature sets ``[Na, D]`` and ``[Nb, D]`` (NumPy / SciPy only)."""
    mu1, s1 = mean_and_cov(features_a)
    mu2, s2 = mean_and_cov(features_b)
    return fid_from_stats(mu1, s1, mu2, s2)


class Precomputed(nn.Module):
    """Identity "feature extractor" so torchmetrics' FID/KID can be fed features extracted once.

    ``num_features`` tells torchmetrics the dimension without running a dummy image.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def fid_torchmetrics(real_features, fake_features) -> float:
    """torchmetrics' ``FrechetInceptionDistance`` on precomputed features (float64 throughout)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _as_tensor(real_features), _as_tensor(fake_features)
    metric = FrechetInceptionDistance(feature=Precomputed(real.shape[1]), normalize=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def kid_torchmetrics(
    real_features,
    fake_features,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """torchmetrics' ``KernelInceptionDistance`` (unbiased MMD², cubic polynomial kernel
    ``k(x, y) = (x·y / D + 1)^3``) on precomputed features: ``(mean, std)`` over ``subsets`` random
    subsets of ``min(subset_size, Nreal, Nfake)`` samples each. ``seed`` fixes the subset draws.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _as_tensor(real_features), _as_tensor(fake_features)
    size = int(min(subset_size, real.shape[0], fake.shape[0]))
    if size < 2:
        raise ValueError(f"KID needs at least 2 real and 2 generated samples, got {real.shape[0]} and {fake.shape[0]}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=Precomputed(real.shape[1]), subsets=subsets, subset_size=size, degree=degree, coef=float(coef)
        )
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


# ----------------------------------------------------------------------------------------- diversity


def mean_pairwise_distance(features) -> float:
    """Mean Euclidean distance over all unordered pairs ``i < j`` of rows of ``features [N, D]``."""
    f = _as_tensor(features)
    n = f.shape[0]
    if n < 2:
        return float("nan")
    d = torch.cdist(f, f)
    iu = torch.triu_indices(n, n, offset=1)
    return float(d[iu[0], iu[1]].mean())


def diversity(fake_features, real_features=None) -> dict[str, float | None]:
    """Spread of generated samples: ``{"generated": mpd, "real": mpd or None, "ratio": generated / real}``.

    A ratio near 1 means the generated set is as varied as real images of the target combination;
    far below 1 suggests mode collapse.
    """
    gen = mean_pairwise_distance(fake_features)
    if real_features is None:
        return {"generated": gen, "real": None, "ratio": None}
    real = mean_pairwise_distance(real_features)
    ratio = gen / real if real and math.isfinite(real) and real > 0 else None
    return {"generated": gen, "real": real, "ratio": ratio}


__all__ = [
    "presence",
    "feature_rates",
    "joint_count",
    "joint_rate",
    "wilson_interval",
    "mean_and_cov",
    "fid_from_stats",
    "fid_from_features",
    "fid_torchmetrics",
    "kid_torchmetrics",
    "mean_pairwise_distance",
    "diversity",
    "Precomputed",
]
