"""The judge is not fooled by what generators produce: degraded views keep their labels, non-face
images (noise, checkerboards, colour blobs, smears) are negatives of every attribute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from multifeat.errors import ConfigError
from multifeat.eval.evaluator import AttributeEvaluator, load_evaluator
from multifeat.eval.judge_data import (
    NONFACE_KINDS,
    VIEW_DEGRADATIONS,
    balanced_accuracy,
    degradation_accuracy,
    degraded_view,
    nonface_images,
    nonface_rates,
    robust_batch,
)


def _faces(n=8, size=32, seed=5):
    from multifeat.data import SyntheticFaces

    ds = SyntheticFaces(num_samples=n, image_size=size, seed=seed)
    items = ds.__getitems__(list(range(n)))
    return torch.stack([it["image"] for it in items]), torch.stack([it["attrs"] for it in items])


def _lag1_corr(img):
    """Correlation of horizontally neighbouring pixels (1: smooth, ~0: white noise)."""
    a, b = img[..., :, :-1].flatten(), img[..., :, 1:].flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ non-face images
@pytest.mark.parametrize("kind", NONFACE_KINDS)
def test_nonface_images_are_seeded_and_in_range(kind):
    faces, _ = _faces(4)
    a = nonface_images(6, 32, kind, _g(1), faces=faces)
    b = nonface_images(6, 32, kind, _g(1), faces=faces)
    c = nonface_images(6, 32, kind, _g(2), faces=faces)
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    assert nonface_images(0, 32, kind, _g()).shape == (0, 3, 32, 32)


def test_checkerboards_alternate_two_colours():
    imgs = nonface_images(20, 32, "checkerboard", _g(3))
    cells = set()
    for img in imgs:
        colours = torch.unique(img.reshape(3, -1).T, dim=0)
        assert colours.shape[0] == 2
        first = (img == img[:, :1, :1]).all(dim=0)  # pixels of the first colour
        assert 0.4 <= float(first.float().mean()) <= 0.6
        # squares of some side c: one square further, down or right, the colour flips everywhere
        flips = [c for c in (1, 2, 4, 8) if torch.equal(first[c:, :], ~first[:-c, :]) and torch.equal(first[:, c:], ~first[:, :-c])]
        assert len(flips) == 1
        c = flips[0]
        cells.add(c)
    assert len(cells) >= 3  # fine (GAN-artefact) and coarse squares both occur


def test_noise_is_white_or_low_frequency_and_blobs_are_smooth():
    noise = nonface_images(30, 32, "noise", _g(4))
    corr = [_lag1_corr(x) for x in noise]
    assert sum(c < 0.2 for c in corr) >= 5 and sum(c > 0.6 for c in corr) >= 5  # both white and smooth noise
    assert all(float(x.std()) > 0.1 for x in noise)
    blobs = nonface_images(30, 32, "blobs", _g(5))
    assert all(_lag1_corr(x) > 0.8 for x in blobs if float(x.std()) > 0.05)
    # several colours: the spread between the darkest and the brightest region is visible
    assert sum(float(x.mean(0).max() - x.mean(0).min()) > 0.3 for x in blobs) >= 25


def test_smears_are_faces_shrunk_to_a_few_pixels():
    face, _ = _faces(1, size=32)
    smears = nonface_images(12, 32, "smear", _g(6), faces=face)
    pool = lambda t: F.avg_pool2d(t[None] if t.ndim == 3 else t, 4)  # noqa: E731  (4 x 4 means cancel a 1-2 px checkerboard)
    recon = [F.interpolate(F.interpolate(face, size=(k, k), mode="area"), size=(32, 32), mode="bilinear",
                           align_corners=False) for k in (2, 3)]  # 32 px: shrunk to 2 or 3 px
    checkered = 0
    for s in smears:
        # one of those reconstructions explains the smear up to faint noise and the checkerboard
        assert min(float((pool(s) - pool(r)).abs().mean()) for r in recon) < 0.06
        assert float((s - face[0]).abs().mean()) > 0.1  # and it is not the face
        fine = s[None] - F.interpolate(pool(s), scale_factor=4, mode="nearest")  # what the 4 x 4 means miss
        checkered += float(fine.abs().mean()) > 0.08
    assert 3 <= checkered <= 9  # about half carry an early generator's checkerboard
    with pytest.raises(ConfigError, match="unknown non-face kind 'fog'"):
        nonface_images(2, 32, "fog")


# ------------------------------------------------------------------ degraded views
@pytest.mark.parametrize("kind", VIEW_DEGRADATIONS)
def test_degraded_views_change_the_image_but_keep_the_face(kind):
    faces, _ = _faces(4)
    weak = degraded_view(faces, kind, 0.0, _g(7))
    strong = degraded_view(faces, kind, 1.0, _g(7))
    assert strong.shape == faces.shape and float(strong.min()) >= -1 and float(strong.max()) <= 1
    d_weak, d_strong = float((weak - faces).abs().mean()), float((strong - faces).abs().mean())
    assert d_strong > 0.02 and d_strong > d_weak  # stronger is further from the face
    # still the same picture: its coarse layout (8 x 8: where face, hair and beard are) is, channel by
    # channel, strongly correlated with the face's
    coarse_f, coarse_s = F.avg_pool2d(faces, 4).flatten(2), F.avg_pool2d(strong, 4).flatten(2)
    for f, s in zip(coarse_f, coarse_s):
        corr = [float(torch.corrcoef(torch.stack([f[c], s[c]]))[0, 1]) for c in range(3)]
        assert sum(corr) / 3 > 0.6, corr
    assert torch.equal(degraded_view(faces[0], kind, 0.5, _g(8)), degraded_view(faces[:1], kind, 0.5, _g(8))[0])


def test_degraded_view_rejects_bad_arguments():
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ConfigError, match="strength must be in"):
        degraded_view(x, "blur", 1.5)
    with pytest.raises(ConfigError, match="unknown degradation 'sepia'"):
        degraded_view(x, "sepia", 0.5)


def test_robust_batch_keeps_labels_and_appends_nonface_negatives():
    faces, attrs = _faces(8)
    x, y = robust_batch(faces, attrs, degrade_prob=1.0, nonface_fraction=0.5, generator=_g(9))
    assert x.shape == (12, 3, 32, 32) and y.shape == (12, 4)
    assert torch.equal(y[:8], attrs) and torch.equal(y[8:], torch.zeros(4, 4))
    assert all(not torch.equal(a, b) for a, b in zip(x[:8], faces))  # every face was degraded
    assert all(min(float((n - f).abs().mean()) for f in faces) > 0.05 for n in x[8:])  # negatives are new images
    same_x, same_y = robust_batch(faces, attrs, degrade_prob=0.0, nonface_fraction=0.0, generator=_g(9))
    assert torch.equal(same_x, faces) and torch.equal(same_y, attrs)


def test_balanced_accuracy_by_hand():
    probs = torch.tensor([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4], [0.4, 0.9]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    # column 0: positives rows 0,1,3 -> 2/3 detected; negative row 2 -> 1/1 rejected: (2/3 + 1) / 2
    # column 1: positive row 3 detected (1/1); negatives rows 0,1,2 -> row 1 wrong: 2/3: (1 + 2/3) / 2
    assert balanced_accuracy(probs, targets) == pytest.approx([5 / 6, 5 / 6])


def test_robust_settings_are_checked_and_stored(quick_evaluator_ckpt):
    with pytest.raises(ConfigError, match="degrade_prob"):
        AttributeEvaluator(image_size=16, degrade_prob=1.5)
    ckpt = torch.load(quick_evaluator_ckpt, weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["robust"] is True and hp["degrade_prob"] == 0.5 and hp["nonface_fraction"] == 0.25
    rates = ckpt["multifeat"]["nonface_rates"]
    assert set(rates) == {"noise", "checkerboard", "blobs"}
    assert all(set(r) == {"bald", "beard", "eyeglasses", "smiling"} for r in rates.values())
    m = load_evaluator(quick_evaluator_ckpt)
    assert m.nonface_rates == rates and m.hparams.robust is True


@pytest.mark.slow
def test_trained_judge_ignores_nonfaces_and_still_sees_the_features(trained_evaluator_ckpt):
    """32 px, robust training (conftest: 300 steps). Noise, checkerboards and colour blobs it has not
    seen (another seed) get every feature at most 5 % of the time, and held-out SyntheticFaces are still
    recognised: balanced accuracy >= 0.8 on bald and beard."""
    m = load_evaluator(trained_evaluator_ckpt)
    rates = nonface_rates(m, n=200, seed=2024)
    worst = {k: max(v.values()) for k, v in rates.items()}
    assert all(r <= 0.05 for r in worst.values()), rates
    faces, attrs = _faces(256, size=32, seed=31_337)
    bal = balanced_accuracy(m.predict_proba(faces), attrs)
    assert bal[0] >= 0.8 and bal[1] >= 0.8, dict(zip(m.attributes, bal))
    # and the degraded views of those faces are mostly still read right
    acc = degradation_accuracy(m, faces, attrs, strength=0.5)
    assert acc["clean"]["bald"] >= 0.9 and acc["blur"]["bald"] >= 0.8, acc


def test_judge_robustness_script_prints_the_table(capsys, repo_root):
    """benchmarks/judge_robustness.py at its smallest size: one row per measurement and judge."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("judge_robustness", repo_root / "benchmarks" / "judge_robustness.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--baseline", "--g1-steps", "1"]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| 16 ")]
    kinds = ["clean", *VIEW_DEGRADATIONS, "clean balanced", *(f"non-face {k}" for k in NONFACE_KINDS), "G1 samples"]
    for judge in ("robust", "plain"):
        mine = [r.split("|")[3].strip() for r in rows if r.split("|")[2].strip() == judge]
        assert [m.split(" (")[0] for m in mine] == kinds, mine
    assert "| size | judge" in out and "bald" in out and "CPU: " in out
