"""Metric code against independent computations: hand-worked numbers and plain NumPy loops."""

import itertools
import math

import numpy as np
import pytest
import torch

from multifeat.eval import metrics as M


def test_wilson_interval_by_hand():
    # k=8, n=10, z=1.96: p=0.8, z^2=3.8416, z^2/n=0.38416, denominator 1+0.38416=1.38416.
    # centre = (0.8 + 3.8416/20) / 1.38416 = 0.99208 / 1.38416 = 0.716738...
    # half   = 1.96 * sqrt(0.8*0.2/10 + 3.8416/400) / 1.38416 = 1.96 * sqrt(0.025604) / 1.38416
    #        = 1.96 * 0.1600125 / 1.38416 = 0.2265812...
    # -> (0.490157, 0.943319)
    lo, hi = M.wilson_interval(8, 10)
    assert lo == pytest.approx(0.490157, abs=2e-6)
    assert hi == pytest.approx(0.943319, abs=2e-6)


def test_wilson_interval_edges():
    # k=0, n=4: centre = (0 + 3.8416/8)/(1+0.9604) = 0.4802/1.9604 = 0.244950; half = 1.96*sqrt(3.8416/64)/1.9604
    #         = 1.96*0.245/1.9604 = 0.244950 -> lower bound exactly 0, upper 0.489900
    lo, hi = M.wilson_interval(0, 4)
    assert lo == pytest.approx(0.0, abs=1e-12)
    assert hi == pytest.approx(0.489900, abs=2e-6)
    assert M.wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        M.wilson_interval(5, 4)


def test_rates_on_constructed_probabilities():
    # 5 images x 3 attributes; threshold 0.5 counts 0.5 itself as present.
    probs = torch.tensor([
        [0.9, 0.8, 0.1],   # a, b
        [0.5, 0.2, 0.7],   # a (exactly at threshold), c
        [0.1, 0.9, 0.9],   # b, c
        [0.6, 0.6, 0.6],   # a, b, c
        [0.4, 0.49, 0.0],  # none
    ])
    rates = M.feature_rates(probs, ["a", "b", "c"])
    assert rates == {"a": 3 / 5, "b": 3 / 5, "c": 3 / 5}
    assert M.joint_rate(probs[:, [0, 1]]) == 2 / 5   # rows 0 and 3
    assert M.joint_count(probs) == 1                  # row 3 only
    assert M.joint_rate(probs[:, [1, 2]], threshold=0.65) == 1 / 5  # row 2 only


def _plain_fid(a, b):
    """FID from its definition, with the matrix square root through an eigendecomposition of the
    symmetric product S1^(1/2) S2 S1^(1/2) (tr sqrt(S1 S2) = tr sqrt(S1^(1/2) S2 S1^(1/2)))."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r1 @ s2 @ r1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


def test_fid_one_dimensional_by_hand():
    # 1-d Gaussians: FID = (m1-m2)^2 + (s1 - s2)^2 with s the standard deviations.
    a = np.array([[0.0], [2.0]])        # mean 1, var 2
    b = np.array([[3.0], [5.0], [7.0]])  # mean 5, var 4
    expected = (1 - 5) ** 2 + (math.sqrt(2) - 2) ** 2
    assert M.fid_from_features(a, b) == pytest.approx(expected, rel=1e-12)


def test_fid_plain_and_torchmetrics_agree():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 5))
    b = rng.normal(loc=0.3, scale=1.5, size=(50, 5)) @ rng.normal(size=(5, 5))
    ref = _plain_fid(a, b)
    assert M.fid_from_features(a, b) == pytest.approx(ref, rel=1e-9, abs=1e-9)
    assert M.fid_torchmetrics(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(ref, rel=1e-8, abs=1e-8)
    assert M.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-8)


def _kid_by_hand(x, y):
    """Unbiased MMD^2 with k(u, v) = (u.v / d + 1)^3, written as explicit loops."""
    d = x.shape[1]
    k = lambda u, v: (float(np.dot(u, v)) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kid_matches_hand_computed_mmd():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3))
    y = rng.normal(loc=0.5, size=(6, 3))
    # one subset holding every sample: the subset draw is only a permutation, MMD is order-free
    mean, std = M.kid_torchmetrics(x, y, subsets=1, subset_size=6)
    assert mean == pytest.approx(_kid_by_hand(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_subsets_are_seeded():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    a = M.kid_torchmetrics(x, y, subsets=5, subset_size=10, seed=3)
    b = M.kid_torchmetrics(x, y, subsets=5, subset_size=10, seed=3)
    c = M.kid_torchmetrics(x, y, subsets=5, subset_size=10, seed=4)
    assert a == b and a != c


def test_mean_pairwise_distance_and_diversity():
    # three points on a line at 0, 3, 4 (in 2-d): pair distances 3, 4, 1 -> mean 8/3
    f = np.array([[0.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    assert M.mean_pairwise_distance(f) == pytest.approx(8 / 3)
    real = np.array([[0.0, 0.0], [0.0, 4.0]])  # one pair, distance 4
    d = M.diversity(f, real)
    assert d["real"] == pytest.approx(4.0)
    assert d["ratio"] == pytest.approx(8 / 3 / 4)
    assert M.diversity(f)["ratio"] is None
