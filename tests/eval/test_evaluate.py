"""evaluate_images against values computed independently (stand-in evaluator with hand-checkable outputs)."""

import json

import numpy as np
import pytest
import torch

from multifeat.errors import ConfigError
from multifeat.eval import metrics as M
from multifeat.eval.evaluate import evaluate_generator, evaluate_images, render_report, summary_row
from multifeat.eval.features import (
    EvaluatorFeatures,
    extract_features,
    select_extractor,
    torchmetrics_fid_kid,
)


def _images(channel_means):
    """One constant 16x16 image per row of channel means (values in [-1, 1])."""
    x = torch.tensor(channel_means, dtype=torch.float32)[:, :, None, None].repeat(1, 1, 16, 16)
    return x


def test_evaluate_images_rates_fid_diversity(colour_evaluator, tmp_path):
    # P = (channel mean + 1)/2: rows give P(bald), P(beard)
    fake = _images([
        [0.6, 0.6, -1.0],   # P = 0.8, 0.8  -> both
        [0.6, -0.6, -1.0],  # P = 0.8, 0.2  -> bald only
        [-0.6, 0.2, -1.0],  # P = 0.2, 0.6  -> beard only
        [0.0, 0.0, 0.4],    # P = 0.5, 0.5  -> both (threshold counts 0.5), eyeglasses P = 0.7
    ])
    real = _images([[0.8, 0.8, -0.8], [0.4, 0.6, -0.9], [0.9, 0.3, -1.0]])
    r = evaluate_images(fake, ("bald", "beard"), colour_evaluator, real, extractor="evaluator", kid_subsets=3,
                        out_dir=tmp_path, label="generated")
    assert r["feature_rates"]["bald"]["count"] == 3 and r["feature_rates"]["beard"]["count"] == 3
    assert r["joint"]["count"] == 2 and r["joint"]["rate"] == 0.5
    assert r["joint"]["ci95"] == pytest.approx(list(M.wilson_interval(2, 4)))
    assert r["attribute_rates"]["eyeglasses"] == 0.25
    assert r["real"]["joint_rate"] == 1.0
    # features are the channel means: compare with the plain formulas on those by hand
    ff = np.array([[0.6, 0.6, -1.0], [0.6, -0.6, -1.0], [-0.6, 0.2, -1.0], [0.0, 0.0, 0.4]])
    rf = np.array([[0.8, 0.8, -0.8], [0.4, 0.6, -0.9], [0.9, 0.3, -1.0]])
    assert r["fid"] == pytest.approx(M.fid_from_features(rf, ff), rel=1e-5, abs=1e-5)
    assert r["diversity"]["ratio"] == pytest.approx(M.mean_pairwise_distance(ff) / M.mean_pairwise_distance(rf), rel=1e-5)
    assert r["extractor"].startswith("evaluator")
    # files
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["joint"]["count"] == 2 and metrics["extractor"] == r["extractor"]
    report = (tmp_path / "report.md").read_text()
    assert "| **joint** | 2/4 |" in report and "validation accuracy" in report and r["extractor"] in report
    assert (tmp_path / "samples.png").stat().st_size > 0


def test_unknown_feature_lists_valid_names(colour_evaluator):
    with pytest.raises(ConfigError, match="valid names: bald, beard, eyeglasses"):
        evaluate_images(_images([[0, 0, 0], [0, 0, 0]]), ("bald", "moustache"), colour_evaluator)


def test_evaluate_generator_chunks_with_seeds(colour_evaluator):
    calls = []

    def sample(n, seed=None):
        calls.append((n, seed))
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n, 3, 16, 16, generator=g) * 2 - 1

    r = evaluate_generator(sample, n=10, features=("bald",), evaluator=colour_evaluator, seed=5, batch_size=4)
    assert calls == [(4, 5), (4, 6), (2, 7)]
    assert r["n"] == 10 and r["fid"] is None and r["diversity"]["ratio"] is None
    assert "n/a" in render_report(r)
    assert summary_row(r)["rate_bald"] == r["feature_rates"]["bald"]["rate"]


def test_torchmetrics_with_plugged_extractor_equals_plain_fid(colour_evaluator):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(20, 3, 16, 16, generator=g) * 2 - 1
    fake = torch.rand(15, 3, 16, 16, generator=g) * 1.5 - 0.5
    ext, name = select_extractor("evaluator", evaluator=colour_evaluator)
    assert isinstance(ext, EvaluatorFeatures) and "3-d" in name
    out = torchmetrics_fid_kid(real, fake, ext, batch_size=7, kid_subsets=4, kid_subset_size=10)
    rf = colour_evaluator.features(real).double().numpy()
    ff = colour_evaluator.features(fake).double().numpy()
    assert out["fid"] == pytest.approx(M.fid_from_features(rf, ff), rel=1e-8, abs=1e-10)
    assert out["kid_mean"] == pytest.approx(M.kid_torchmetrics(rf, ff, subsets=4, subset_size=10)[0], rel=1e-10)
    assert torch.allclose(extract_features(ext, real, 6), torch.from_numpy(rf))


def test_auto_extractor_falls_back_without_inception(colour_evaluator, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no weight file there
    _, name = select_extractor("auto", evaluator=colour_evaluator)
    assert name.startswith("evaluator")
    with pytest.raises(ConfigError, match="InceptionV3 features are unavailable"):
        select_extractor("inception", evaluator=colour_evaluator)


def test_download_permission_reaches_the_extractor_choice(colour_evaluator, monkeypatch):
    """``allow_download`` is passed to ``select_extractor`` as given (off unless asked)."""
    import multifeat.eval.evaluate as E

    seen = []

    def spy(kind, evaluator=None, inception_weights=None, allow_download=False):
        seen.append(allow_download)
        return select_extractor("evaluator", evaluator=evaluator)

    monkeypatch.setattr(E, "select_extractor", spy)
    fake = _images([[0.6, 0.6, -1.0], [0.0, 0.0, 0.4]])
    real = _images([[0.8, 0.8, -0.8], [0.4, 0.6, -0.9]])
    evaluate_images(fake, ("bald", "beard"), colour_evaluator, real, kid_subsets=2)
    evaluate_images(fake, ("bald", "beard"), colour_evaluator, real, kid_subsets=2, allow_download=True)
    assert seen == [False, True]
