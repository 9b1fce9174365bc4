"""SyntheticFaces: exact labels, determinism, filters, joint_fraction, argument checks."""

import numpy as np
import pytest
import torch

import multifeat.data.synthetic_render as render
from multifeat.data import ATTRIBUTES, SyntheticFaces
from multifeat.data.synthetic_render import SCALP_V
from multifeat.errors import ConfigError


def _flip(ds, index, name):
    """Render item ``index`` as drawn and with attribute ``name`` flipped (everything else equal)."""
    p = ds.params(index)
    q = {k: v.copy() for k, v in p.items()}
    q[name] = 1.0 - q[name]
    (img, masks) = ds.render_params([p, q], with_masks=True)
    return img, masks, bool(p[name][0])


def test_item_contract():
    ds = SyntheticFaces(num_samples=8, image_size=32, seed=0)
    item = ds[3]
    assert set(item) == {"image", "attrs", "index"}
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["attrs"].shape == (4,) and set(item["attrs"].tolist()) <= {0.0, 1.0}
    assert item["index"] == 3
    # 8-bit quantised like a real photo: (x + 1) * 127.5 is an integer
    v = (item["image"] + 1) * 127.5
    assert torch.allclose(v, v.round(), atol=1e-4)
    assert ds[-1]["index"] == 7
    with pytest.raises(IndexError):
        ds[8]


@pytest.mark.parametrize("size", [16, 32, 64, 128, 256])
def test_power_of_two_sizes(size):
    ds = SyntheticFaces(num_samples=2, image_size=size)
    assert ds[0]["image"].shape == (3, size, size)


def test_deterministic_per_seed_and_index():
    a = SyntheticFaces(num_samples=20, image_size=32, seed=5)
    b = SyntheticFaces(num_samples=500, image_size=32, seed=5)  # the length does not change item i
    c = SyntheticFaces(num_samples=20, image_size=32, seed=6)
    for i in (0, 7, 19):
        assert torch.equal(a[i]["image"], b[i]["image"])
        assert torch.equal(a[i]["attrs"], b[i]["attrs"])
    assert not torch.equal(a[0]["image"], c[0]["image"])
    assert not torch.equal(a[0]["image"], a[1]["image"])


def test_batch_cache_and_single_render_agree():
    ds = SyntheticFaces(num_samples=12, image_size=32, seed=1)
    cached = SyntheticFaces(num_samples=12, image_size=32, seed=1, cache=True)
    singles = torch.stack([ds[i]["image"] for i in range(12)])
    batch = torch.stack([it["image"] for it in ds.__getitems__(list(range(12)))])
    assert torch.equal(singles, batch)
    first = torch.stack([it["image"] for it in cached.__getitems__([3, 1, 3, 11])])
    again = torch.stack([cached[i]["image"] for i in (3, 1, 3, 11)])
    assert torch.equal(first, again) and torch.equal(first, singles[[3, 1, 3, 11]])


@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_render_windows_are_exact(monkeypatch, size):
    """The renderer draws parts into windows; drawing on the full image must give the same bytes."""
    ds = SyntheticFaces(num_samples=32, image_size=size, seed=size)
    packed = render.stack_params([ds.params(i) for i in range(32)])
    img, masks = render.render_faces(packed, size, with_masks=True)
    monkeypatch.setattr(render, "_window", lambda p, n, s, *a: (slice(0, s), slice(0, s)))
    full, full_masks = render.render_faces(packed, size, with_masks=True)
    assert np.array_equal(img, full)
    for k in masks:
        assert np.array_equal(masks[k], full_masks[k]), k


def test_bald_faces_have_no_hair_and_others_cover_the_scalp():
    ds = SyntheticFaces(num_samples=60, image_size=32, seed=2)
    n_bald = 0
    for i in range(60):
        m = ds.masks(i)
        bald = bool(ds.attributes(i)[0])
        scalp = m["scalp"]
        assert scalp.sum() > 10  # the region exists in every face
        if bald:
            n_bald += 1
            assert m["hair"].max() == 0  # not a single hair pixel anywhere
        else:
            covered = (m["hair"] * scalp).sum() / scalp.sum()
            assert covered > 0.97, (i, float(covered))
    assert 10 < n_bald < 50


@pytest.mark.parametrize("size", [16, 32, 64])
def test_attribute_changes_only_its_own_pixels(size):
    """Flip one attribute with every nuisance fixed: pixels change exactly where its layer is drawn,
    and the change is visible (reference: the same face without the attribute)."""
    ds = SyntheticFaces(num_samples=24, image_size=size, seed=4)
    for i in range(24):
        for name, keys in [("bald", ("hair", "shine")), ("beard", ("beard",)), ("eyeglasses", ("glasses",))]:
            img, masks, _ = _flip(ds, i, name)
            diff = (img[0] - img[1]).abs().amax(0)
            region = torch.zeros_like(diff, dtype=torch.bool)
            for k in keys:
                region |= (masks[k][0] > 0) | (masks[k][1] > 0)
            assert not (diff[~region] > 0).any(), (i, name)
            assert (diff > 0.2).sum() >= (2 if size == 16 else 6), (i, name, size)


def test_glasses_pixels_present_exactly_when_eyeglasses():
    ds = SyntheticFaces(num_samples=40, image_size=32, seed=7)
    seen = set()
    for i in range(40):
        has = bool(ds.attributes(i)[2])
        seen.add(has)
        assert (ds.masks(i)["glasses"].sum() > 0) == has
    assert seen == {True, False}


def _face_coords(p, size):
    """Face-local (u, v) of every pixel centre, from the drawing parameters (v points down)."""
    c = (np.arange(size) + 0.5) * 2.0 / size - 1.0
    x, y = np.meshgrid(c, c)
    dx, dy = x - p["cx"][0], y - p["cy"][0]
    cos, sin, s = p["cos"][0], p["sin"][0], p["scale"][0]
    return (dx * cos + dy * sin) / s, (dy * cos - dx * sin) / s


def test_smiling_mouth_curves_up_and_neutral_is_flat():
    ds = SyntheticFaces(num_samples=20, image_size=64, seed=8, require={"beard": False})
    for i in range(20):
        img, masks, smiling = _flip(ds, i, "smiling")
        region = (masks["mouth"][0] > 0) | (masks["mouth"][1] > 0)
        diff = (img[0] - img[1]).abs().amax(0)
        assert not (diff[~region] > 0).any()
        assert (diff > 0.2).sum() >= 8
        p = ds.params(i)
        u, v = _face_coords(p, 64)
        mw = p["mouth_w"][0]
        for k, is_smile in ((0, smiling), (1, not smiling)):
            m = masks["mouth"][k].numpy()
            centre = m * (np.abs(u) < 0.3 * mw)
            sides = m * (np.abs(u) > 0.6 * mw)
            drop = (centre * v).sum() / centre.sum() - (sides * v).sum() / sides.sum()
            if is_smile:  # corners above the centre (v points down)
                assert drop > 0.06, (i, drop)
            else:
                assert abs(drop) < 0.04, (i, drop)


def test_default_probabilities_and_custom_probs():
    ds = SyntheticFaces(num_samples=4000, image_size=16, seed=0)
    a = np.stack([ds.attributes(i) for i in range(4000)])
    assert np.all(np.abs(a.mean(0) - 0.5) < 0.04)  # 0.04 ~ 5 standard errors
    ds = SyntheticFaces(num_samples=4000, image_size=16, seed=0, attribute_probs={"bald": 0.1, "smiling": 0.9})
    a = np.stack([ds.attributes(i) for i in range(4000)])
    assert abs(a[:, 0].mean() - 0.1) < 0.025 and abs(a[:, 3].mean() - 0.9) < 0.025
    assert abs(a[:, 1].mean() - 0.5) < 0.04


def test_require_filter_keeps_only_matching_items():
    ds = SyntheticFaces(num_samples=300, image_size=16, seed=0, require={"bald": True, "beard": False})
    a = np.stack([ds.attributes(i) for i in range(300)])
    assert (a[:, 0] == 1).all() and (a[:, 1] == 0).all()
    assert 0.35 < a[:, 2].mean() < 0.65  # the others stay free
    # string / int flags
    ds2 = SyntheticFaces(num_samples=50, image_size=16, require={"eyeglasses": 1, "smiling": "false"})
    a2 = np.stack([ds2.attributes(i) for i in range(50)])
    assert (a2[:, 2] == 1).all() and (a2[:, 3] == 0).all()
    # the images carry the required attributes (mask level)
    assert all(ds.masks(i)["hair"].max() == 0 and ds.masks(i)["beard"].max() == 0 for i in range(5))


def test_joint_fraction():
    n = 5000
    zero = SyntheticFaces(num_samples=n, image_size=16, joint_fraction=0.0)
    a = np.stack([zero.attributes(i) for i in range(n)])
    assert ((a[:, 0] == 1) & (a[:, 1] == 1)).sum() == 0
    assert a[:, 0].sum() > 1000 and a[:, 1].sum() > 1000  # each feature alone is still common
    one = SyntheticFaces(num_samples=500, image_size=16, joint_fraction=1.0)
    a = np.stack([one.attributes(i) for i in range(500)])
    assert ((a[:, 0] == 1) & (a[:, 1] == 1)).all()
    some = SyntheticFaces(num_samples=n, image_size=16, joint_fraction=0.2)
    a = np.stack([some.attributes(i) for i in range(n)])
    assert abs(((a[:, 0] == 1) & (a[:, 1] == 1)).mean() - 0.2) < 0.03
    # after a filter: 5 % of the bearded faces are also bald
    beard = SyntheticFaces(num_samples=n, image_size=16, require={"beard": True}, joint_fraction=0.05)
    a = np.stack([beard.attributes(i) for i in range(n)])
    assert (a[:, 1] == 1).all() and abs(a[:, 0].mean() - 0.05) < 0.015


@pytest.mark.parametrize("kwargs", [
    {"image_size": 48}, {"image_size": 8}, {"image_size": 512}, {"image_size": 0}, {"image_size": -64},
    {"num_samples": 0}, {"num_samples": -3}, {"seed": -1},
    {"attribute_probs": {"hat": 0.5}}, {"attribute_probs": {"bald": 1.5}},
    {"require": {"hat": True}}, {"require": {"bald": "maybe"}},
    {"joint_fraction": 1.2},
    {"require": {"bald": True, "beard": True}, "joint_fraction": 0.0},
    {"require": {"bald": True}, "attribute_probs": {"bald": 0.0}},
    {"require": {"smiling": True}, "attribute_probs": {"smiling": 0.0}},
    {"attribute_probs": {"bald": 1.0, "beard": 1.0}, "joint_fraction": 0.5},
])
def test_bad_arguments_raise_config_errors(kwargs):
    with pytest.raises(ConfigError):
        SyntheticFaces(**kwargs)


def test_error_messages_name_the_problem():
    with pytest.raises(ConfigError, match="power of two"):
        SyntheticFaces(image_size=48)
    with pytest.raises(ConfigError, match="bald, beard, eyeglasses, smiling"):
        SyntheticFaces(require={"hat": True})


def _best_single_pixel_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """Best accuracy of any rule 'pixel value > t' (or < t) on one column of ``x`` (plain reference)."""
    best = 0.0
    n = len(y)
    for col in x.T:
        order = np.argsort(col, kind="stable")
        ys = y[order]
        pos_below = np.concatenate([[0], np.cumsum(ys)])  # positives with value <= threshold
        k = np.arange(n + 1)
        acc_gt = ((k - pos_below) + (ys.sum() - pos_below)) / n  # predict 1 above the threshold
        best = max(best, acc_gt.max(), (1 - acc_gt).max())
    return best


def test_no_single_pixel_decides_an_attribute():
    n = 400
    ds = SyntheticFaces(num_samples=n, image_size=16, seed=11)
    items = ds.__getitems__(list(range(n)))
    x = torch.stack([it["image"] for it in items]).reshape(n, -1).numpy()
    attrs = torch.stack([it["attrs"] for it in items]).numpy()
    for j, name in enumerate(ATTRIBUTES):
        acc = _best_single_pixel_accuracy(x, attrs[:, j])
        assert acc < 0.9, (name, acc)


def test_scalp_region_lies_above_every_hairline():
    # hairlines are drawn at v in [-0.8, -0.5] (wave included), so a non-bald scalp is fully covered
    assert SCALP_V < -0.8
