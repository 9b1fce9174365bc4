"""Latent directions: boundaries recovered from labelled samples, orthogonalisation, edits."""

import pytest
import torch
from mixing_helpers import FIXTURE, LinearWClassifier, PixelGenerator

from multifeat.errors import ConfigError, DataError
from multifeat.mixing import StyleMixer, edit_ws, fit_linear_boundary, orthogonalize


def test_logistic_boundary_recovers_a_known_hyperplane():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(600, 5, generator=g) * 2 + 3
    n_true = torch.tensor([1.0, -2.0, 0.5, 0.0, 1.0])
    n_true = n_true / n_true.norm()
    labels = ((w @ n_true - 2.5) > 0).float()
    normal, bias, acc = fit_linear_boundary(w, labels)
    assert float(normal @ n_true) > 0.98
    assert float(normal.norm()) == pytest.approx(1.0)
    assert acc > 0.97
    # bias makes normal . w + bias the signed distance: ~ -2.5 offset along the true normal
    assert bias == pytest.approx(-2.5, abs=0.3)


def test_orthogonalize_gram_schmidt_and_conditional():
    torch.manual_seed(0)
    n = {"bald": torch.randn(16), "beard": torch.randn(16), "smiling": torch.randn(16)}
    n["beard"] = n["beard"] + 2 * n["bald"]  # strongly correlated with bald
    unit = {k: v / v.norm() for k, v in n.items()}

    gs = orthogonalize(n, mode="gram_schmidt")
    names = list(gs)
    for i, a in enumerate(names):
        assert float(gs[a].norm()) == pytest.approx(1.0, abs=1e-6)
        for b in names[i + 1 :]:
            assert abs(float(gs[a] @ gs[b])) < 1e-6
    torch.testing.assert_close(gs["bald"], unit["bald"])  # the first is kept
    w = torch.randn(16)
    for a in names:  # moving along one leaves the projections on the others unchanged
        moved = w + 3.0 * gs[a]
        for b in names:
            if b != a:
                assert float(moved @ gs[b]) == pytest.approx(float(w @ gs[b]), abs=1e-5)

    cond = orthogonalize(n, mode="conditional")
    for a in names:
        assert float(cond[a] @ unit[a]) > 0  # still raises its own attribute
        for b in names:
            if b != a:  # leaves every other boundary score unchanged
                assert abs(float(cond[a] @ unit[b])) < 1e-6
    with pytest.raises(ConfigError, match="span"):
        orthogonalize([unit["bald"], 2 * unit["bald"]], mode="gram_schmidt")


def test_edit_ws_adds_the_weighted_vectors_on_chosen_layers():
    vecs = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 1.0])}
    ws = torch.zeros(2, 3, 2)
    out = edit_ws(ws, {"a": 2.0, "b": -1.0}, vecs, layers=[1])
    assert out[:, 1].tolist() == [[2.0, -1.0]] * 2 and out[:, [0, 2]].abs().sum() == 0
    with pytest.raises(ConfigError, match="no direction named 'c'"):
        edit_ws(ws, {"c": 1.0}, vecs)


def test_learned_directions_recover_the_classifiers_and_compose_without_undoing_each_other():
    gen = PixelGenerator(num_ws=8, w_dim=4, resolution=8, z_dim=6)
    mixer = StyleMixer(gen, distance="pixel-gradient")
    u_bald = torch.tensor([1.0, 0.5, 0.0, -0.5])
    u_beard = torch.tensor([0.8, 0.0, 1.0, 0.0])  # cos(u_bald, u_beard) ~ 0.4: correlated attributes
    dirs = mixer.learn_directions({"bald": LinearWClassifier(u_bald), "beard": LinearWClassifier(u_beard)},
                                  num_samples=600, seed=1)
    for name, u in (("bald", u_bald), ("beard", u_beard)):
        assert float(dirs[name].normal @ (u / u.norm())) > 0.97, name
        assert dirs[name].accuracy > 0.95 and dirs[name].num_positive > 50 and dirs[name].num_negative > 50

    ws = mixer.sample_ws(5, seed=9)
    s_bald, s_beard = dirs["bald"].score(ws), dirs["beard"].score(ws)
    up_bald = mixer.edit(ws, {"bald": 2.0})
    torch.testing.assert_close(dirs["beard"].score(up_bald), s_beard, atol=1e-5, rtol=0)
    assert (dirs["bald"].score(up_bald) > s_bald + 1.0).all()
    both = mixer.edit(ws, {"bald": 2.0, "beard": 1.5})
    assert (dirs["bald"].score(both) > s_bald + 1.0).all() and (dirs["beard"].score(both) > s_beard + 0.5).all()
    # the edit moves every layer by the same vector, and the real classifiers agree with the scores
    d = both - ws
    torch.testing.assert_close(d, d[:, :1].expand_as(d))
    p_before = LinearWClassifier(u_bald)(mixer.synthesize(ws))
    p_after = LinearWClassifier(u_bald)(mixer.synthesize(up_bald))
    assert (p_after >= p_before).all()
    # without orthogonalisation an edit of bald also moves beard's score
    raw = mixer.edit(ws, {"bald": 2.0}, mode="none")
    assert (dirs["beard"].score(raw) - s_beard).abs().min() > 0.3
    with pytest.raises(ConfigError, match="no learned direction 'hat'"):
        mixer.edit_vectors(["hat"])


def test_one_sided_labels_are_refused(fixtures_dir):
    mixer = StyleMixer(fixtures_dir / FIXTURE, distance="pixel-gradient")
    always = lambda x: torch.ones(x.shape[0])  # noqa: E731
    with pytest.raises(DataError, match="'bald' labelled 16 of 16 samples positive"):
        mixer.learn_directions({"bald": always}, num_samples=16)
