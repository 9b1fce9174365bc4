"""Attribute-guided mixing on cases whose answer is known."""

import pytest
import torch
from mixing_helpers import FIXTURE, LayerMeanClassifier, PixelGenerator

from multifeat.errors import ConfigError
from multifeat.mixing import StyleMixer, candidate_masks, combine_scores


def test_candidates_and_combines():
    cut = candidate_masks(8, "cutoffs")
    assert cut.shape == (14, 8)  # a on 0..K-1 and the reverse, K = 1..7
    assert cut[0].tolist() == [True] + [False] * 7 and cut[1].tolist() == [False] + [True] * 7
    ranges = candidate_masks(8, "ranges")
    # contiguous proper ranges of a (36 - 1 full) and their complements; complements of prefixes/suffixes
    # are suffixes/prefixes, so 35 + 35 - 14 duplicates = 56 distinct sets
    assert ranges.shape == (56, 8)
    assert len({tuple(r.tolist()) for r in ranges}) == 56
    assert torch.equal(ranges[:14], cut)
    assert not ranges.all(dim=1).any() and ranges.any(dim=1).all()
    p1, p2 = torch.tensor([0.5, 0.9]), torch.tensor([0.4, 0.1])
    torch.testing.assert_close(combine_scores(p1, p2, "product"), torch.tensor([0.2, 0.09]))
    torch.testing.assert_close(combine_scores(p1, p2, "min"), torch.tensor([0.4, 0.1]))
    torch.testing.assert_close(combine_scores(p1, p2, "log"), p1.log() + p2.log())
    with pytest.raises(ConfigError):
        combine_scores(p1, p2, "mean")


def _pixel_case():
    """a = +1 on every layer, b = -1. Feature 1 is read from layers 2-4 (wants a); feature 2 from layers
    0, 1, 5, 6, 7 (wants b). The only layer set that gives both is: layers 2, 3, 4 from a."""
    mixer = StyleMixer(PixelGenerator(num_ws=8, w_dim=4, resolution=8), distance="pixel-gradient")
    ws_a, ws_b = torch.ones(2, 8, 4), -torch.ones(2, 8, 4)
    ws_b[1] *= 0.8  # a second pair with a different b
    f1 = LayerMeanClassifier([2, 3, 4], k=10.0)
    f2 = LayerMeanClassifier([0, 1, 5, 6, 7], k=10.0, sign=-1.0)
    return mixer, ws_a, ws_b, f1, f2


def _objective_by_hand(ws_a, ws_b, mask, f1_layers, f2_layers, k=10.0):
    """p1 = sigmoid(k * 0.5 * mean of the mixed styles on f1's layers), p2 likewise with the sign flipped."""
    mixed = torch.where(mask.view(1, -1, 1), ws_a, ws_b)
    p1 = torch.sigmoid(k * 0.5 * mixed[:, f1_layers].mean(dim=(1, 2)))
    p2 = torch.sigmoid(-k * 0.5 * mixed[:, f2_layers].mean(dim=(1, 2)))
    return p1 * p2


def test_range_search_finds_the_known_layers():
    mixer, ws_a, ws_b, f1, f2 = _pixel_case()
    res = mixer.guided_mix(ws_a, ws_b, f1, f2, search="ranges", penalty_weight=0.0)
    for pair in res.pairs:
        assert pair["layers_from_a"] == [2, 3, 4] and pair["layers_from_b"] == [0, 1, 5, 6, 7]
        assert pair["p1"] > 0.99 and pair["p2"] > 0.98
    assert res.best_shared["layers_from_a"] == [2, 3, 4]
    # the returned mixes are the mixes of those layers
    expected = mixer.mix(ws_a, ws_b, layers=[2, 3, 4])
    torch.testing.assert_close(res.ws, expected.ws)
    torch.testing.assert_close(res.images, expected.images)


def test_cutoff_search_agrees_with_brute_force_by_hand():
    mixer, ws_a, ws_b, f1, f2 = _pixel_case()
    res = mixer.guided_mix(ws_a, ws_b, f1, f2, search="cutoffs", penalty_weight=0.0)
    masks = candidate_masks(8, "cutoffs")
    objective = torch.stack([_objective_by_hand(ws_a, ws_b, m, [2, 3, 4], [0, 1, 5, 6, 7]) for m in masks])  # [K, P]
    for i, pair in enumerate(res.pairs):
        k = int(objective[:, i].argmax())
        assert pair["layers_from_a"] == torch.nonzero(masks[k]).flatten().tolist()
        assert pair["objective"] == pytest.approx(float(objective[k, i]), rel=1e-5)
    means = sorted((float(objective[k].mean()) for k in range(len(masks))), reverse=True)
    assert [c["mean_objective"] for c in res.candidates] == pytest.approx(means, rel=1e-5)


def test_w_penalty_is_constant_for_hard_selection_and_refinement_only_improves():
    mixer, ws_a, ws_b, f1, f2 = _pixel_case()
    res = mixer.guided_mix(ws_a, ws_b, f1, f2, search="cutoffs", penalty_space="w", penalty_weight=0.5,
                           refine_steps=60, refine_lr=0.1)
    assert all(c["mean_penalty"] == pytest.approx(0.5) for c in res.candidates)
    for pair in res.pairs:
        assert pair["objective_refined"] >= pair["objective"] - 1e-6
    # the gradient pushes f1's layers towards a and f2's towards b
    assert (res.alphas[:, [2, 3, 4]] > 0.5).all() and (res.alphas[:, [0, 1, 5, 6, 7]] < 0.5).all()
    torch.testing.assert_close(res.ws, ws_b + res.alphas.unsqueeze(-1) * (ws_a - ws_b))


def test_image_penalty_prefers_the_mix_closer_to_its_sources():
    # both features are always present; the penalty alone decides: image distance to a plus to b
    mixer, ws_a, ws_b, _, _ = _pixel_case()
    one = lambda x: torch.ones(x.shape[0])  # noqa: E731
    res = mixer.guided_mix(ws_a, ws_b, one, one, search="cutoffs", penalty_weight=1.0)
    d = mixer.distance
    img_a, img_b = mixer.synthesize(ws_a), mixer.synthesize(ws_b)
    for i, pair in enumerate(res.pairs):
        by_hand = {}
        for m in candidate_masks(8, "cutoffs"):
            layers = tuple(torch.nonzero(m).flatten().tolist())
            img = mixer.mix(ws_a[i : i + 1], ws_b[i : i + 1], layers=layers).images
            by_hand[layers] = 0.5 * float(d(img, img_a[i : i + 1]) + d(img, img_b[i : i + 1]))
        # the chosen set has the smallest penalty (several sets may tie), and its reported penalty is right
        assert by_hand[tuple(pair["layers_from_a"])] == pytest.approx(min(by_hand.values()), rel=1e-5)
        assert pair["penalty"] == pytest.approx(by_hand[tuple(pair["layers_from_a"])], rel=1e-5)
        assert pair["objective"] == pytest.approx(1.0 - pair["penalty"], rel=1e-5)
        assert max(by_hand.values()) > min(by_hand.values()) * 1.01  # the penalty does tell sets apart


def test_guided_mix_with_real_classifiers_on_the_reference_generator(fixtures_dir):
    from multifeat.phases.feature_classifier import FeatureClassifier

    torch.manual_seed(0)
    mixer = StyleMixer(fixtures_dir / FIXTURE, distance="pixel-gradient")
    c1 = FeatureClassifier(image_size=16, feature="bald", width=4, max_width=8).eval()
    c2 = FeatureClassifier(image_size=16, feature="beard", width=4, max_width=8).eval()
    ws = mixer.sample_ws(4, seed=2)
    res = mixer.guided_mix(ws[:2], ws[2:], c1, c2, search="cutoffs", penalty_weight=0.05)
    # re-score the chosen mixes independently: mix, draw, classify, combine
    for i, pair in enumerate(res.pairs):
        m = mixer.mix(ws[i : i + 1], ws[2 + i : 3 + i], layers=pair["layers_from_a"], noise="const")
        with torch.no_grad():
            p1, p2 = float(c1(_down(m.images))), float(c2(_down(m.images)))
        assert pair["p1"] == pytest.approx(p1, abs=1e-5) and pair["p2"] == pytest.approx(p2, abs=1e-5)
    # the chosen objective is the best of the candidate table for a single pair
    single = mixer.guided_mix(ws[:1], ws[2:3], c1, c2, search="cutoffs", penalty_weight=0.05)
    assert single.pairs[0]["objective"] == pytest.approx(single.candidates[0]["mean_objective"])


def _down(x):
    return torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
