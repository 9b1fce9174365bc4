"""D2's data balanced on the other attributes: sampling weights, rates on both sides, describe()."""

import logging

import numpy as np
import pytest
import torch
from celeba_fixtures import CELEBA_COLUMNS, make_celeba

from multifeat.data import FeatureClassifierDataModule
from multifeat.errors import ConfigError, DataError

RANK_ZERO = "lightning.pytorch.utilities.rank_zero"  # the logger of rank_zero_info lines

COL = {c: i for i, c in enumerate(CELEBA_COLUMNS)}


def set_labels(truth, rows: dict[str, dict[str, int]]) -> None:
    """Rewrite chosen CelebA columns of chosen files (1 / -1) in the tree's list_attr_celeba.txt."""
    values = truth["values"].copy()
    for f, cols in rows.items():
        for c, v in cols.items():
            values[truth["files"].index(f), COL[c]] = v
    lines = [str(len(truth["files"])), " ".join(CELEBA_COLUMNS)]
    lines += [f + " " + " ".join(f"{v:2d}" for v in row) for f, row in zip(truth["files"], values)]
    (truth["base"] / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    truth["values"] = values


def beard_of(bald: bool, beard: bool, glasses: bool = False) -> dict[str, int]:
    return {"Bald": 1 if bald else -1, "No_Beard": -1 if beard else 1, "Goatee": -1, "Mustache": -1,
            "Eyeglasses": 1 if glasses else -1}


def drawn_rates(dm, n_draws=30000):
    """Attribute rates of positives and real negatives among the sampler's draws, looked up in the
    datasets themselves (SyntheticFaces.attributes / CelebA labels), not in the module's tables."""
    dm.setup()
    sampler = dm.train_dataloader().sampler
    sampler.num_samples = n_draws
    drawn = torch.tensor(list(iter(sampler)))
    ds = dm.train_set
    out = {}
    for p, (part, src) in enumerate(ds.parts):
        if src not in (0, 1):
            continue
        lo, hi = int(ds.offsets[p]), int(ds.offsets[p + 1])
        local = (drawn[(drawn >= lo) & (drawn < hi)] - lo).tolist()
        base = part.dataset
        if hasattr(base, "attributes"):  # synthetic: ATTRIBUTES order
            a = np.stack([base.attributes(part.indices[i]) for i in local])[:, 1:]
        else:  # celeba: labels columns [feature, *balance]
            a = base.labels[[part.indices[i] for i in local]].numpy()[:, 1:]
        out["positive" if src == 0 else "real_negative"] = a.mean(0)
    return out


def test_synthetic_rates_match_on_both_sides_and_differ_without_balancing():
    kw = dict(feature="bald", num_samples=1200, image_size=16, val_fraction=0.1, synthetic={"joint_fraction": 0.05})
    dm = FeatureClassifierDataModule(**kw)
    r = drawn_rates(dm)
    assert np.abs(r["positive"] - r["real_negative"]).max() < 0.03, r
    assert np.abs(r["positive"] - 0.5).max() < 0.04  # uniform target: every cell equally likely
    d = dm.describe()
    assert d["balance_attributes"] == ["beard", "eyeglasses", "smiling"]
    assert d["before"]["positive"]["beard"] < 0.1 and d["before"]["real_negative"]["beard"] > 0.4
    for a in d["balance_attributes"]:
        assert d["after"]["positive"][a] == pytest.approx(d["after"]["real_negative"][a], abs=1e-6)
    off = FeatureClassifierDataModule(balance_attributes=[], **kw)
    r0 = drawn_rates(off)
    assert r0["real_negative"][0] - r0["positive"][0] > 0.35, r0  # the bias the balance removes
    assert "after" not in off.describe()


def test_joint_free_synthetic_data_has_no_beard_on_either_side():
    dm = FeatureClassifierDataModule(feature="bald", num_samples=800, image_size=16, val_fraction=0.0,
                                     synthetic={"joint_fraction": 0.0})
    r = drawn_rates(dm, 20000)
    assert r["positive"][0] == 0 and r["real_negative"][0] == 0
    assert np.abs(r["positive"] - r["real_negative"]).max() < 0.03
    d = dm.describe()
    assert d["drawn"]["positive"] == d["items"]["positive"]
    assert d["drawn"]["real_negative"] < 0.6 * d["items"]["real_negative"]  # the bearded ones are not drawn


def test_weights_match_hand_worked_numbers(tmp_path):
    truth = make_celeba(tmp_path, n=8, seed=0, partition=False)
    f = truth["files"]
    # positives (bald): 3 without beard, 1 with; real negatives: 2 without, 2 with
    rows = {f[0]: beard_of(1, 0), f[1]: beard_of(1, 0), f[2]: beard_of(1, 0), f[3]: beard_of(1, 1),
            f[4]: beard_of(0, 0), f[5]: beard_of(0, 0), f[6]: beard_of(0, 1), f[7]: beard_of(0, 1)}
    set_labels(truth, rows)
    common = dict(feature="bald", source="celeba", root=str(tmp_path), image_size=8, degraded=False, val_fraction=0.0,
                  balance_attributes=["beard"], cache_mb=0)
    want = {"uniform": [1 / 12] * 3 + [1 / 4] + [1 / 8] * 4,
            # mean target: no beard (3/4 + 2/4) / 2 = 0.625, beard 0.375; each side holds half the mass
            "mean": [0.5 * 0.625 / 3] * 3 + [0.5 * 0.375] + [0.5 * 0.625 / 2] * 2 + [0.5 * 0.375 / 2] * 2}
    for target, w in want.items():
        dm = FeatureClassifierDataModule(balance_target=target, **common)
        dm.setup()
        assert dm.train_set.parts[0][0].dataset.files == f[:4] and dm.train_set.parts[1][0].dataset.files == f[4:]
        assert torch.allclose(dm._train_weights, torch.tensor(w, dtype=torch.float64)), target
    d = dm.describe()
    assert d["before"]["positive"]["beard"] == 0.25 and d["before"]["real_negative"]["beard"] == 0.5
    assert d["after"]["positive"]["beard"] == d["after"]["real_negative"]["beard"] == 0.375


def test_celeba_tree_with_a_beard_bias_is_balanced(tmp_path, caplog):
    truth = make_celeba(tmp_path, n=160, seed=7, partition=False)
    rng = np.random.default_rng(1)
    rows = {}
    for k, name in enumerate(truth["files"]):
        bald = k % 2 == 0
        beard = rng.random() < (0.2 if bald else 0.6)  # bald faces: fewer beards
        rows[name] = beard_of(bald, beard, glasses=rng.random() < (0.7 if bald else 0.3))
    set_labels(truth, rows)
    dm = FeatureClassifierDataModule(feature="bald", source="celeba", root=str(tmp_path), image_size=8, val_fraction=0.1,
                                     balance_attributes=["beard", "eyeglasses"])
    with caplog.at_level(logging.INFO, logger=RANK_ZERO):
        r = drawn_rates(dm)
    assert np.abs(r["positive"] - r["real_negative"]).max() < 0.03, r
    d = dm.describe()
    assert abs(d["before"]["positive"]["beard"] - d["before"]["real_negative"]["beard"]) > 0.25
    assert abs(d["before"]["positive"]["eyeglasses"] - d["before"]["real_negative"]["eyeglasses"]) > 0.25
    line = [m.getMessage() for m in caplog.records if "balanced on beard, eyeglasses" in m.getMessage()]
    assert len(line) == 1 and "unbalanced: positives beard" in line[0]
    # the default balances ATTRIBUTES but the feature: beard, eyeglasses, smiling
    assert FeatureClassifierDataModule(feature="bald", source="celeba", root=str(tmp_path)).balance_attributes == \
        ("beard", "eyeglasses", "smiling")


def test_no_shared_combination_is_an_error(tmp_path):
    truth = make_celeba(tmp_path, n=6, seed=0, partition=False)
    set_labels(truth, {name: beard_of(k < 3, k < 3) for k, name in enumerate(truth["files"])})
    dm = FeatureClassifierDataModule(feature="bald", source="celeba", root=str(tmp_path), image_size=8, val_fraction=0.0,
                                     balance_attributes=["beard"])
    with pytest.raises(DataError, match=r"share no combination of \['beard'\].*beard 1.00.*beard 0.00"):
        dm.setup()


@pytest.mark.parametrize("kwargs, match", [
    ({"balance_attributes": ["bald"]}, "must not name the classified feature"),
    ({"balance_attributes": ["hat"]}, "unknown name"),
    ({"balance_attributes": "beard"}, "list of attribute names"),
    ({"balance_target": "median"}, "balance_target"),
    ({"source": "folder", "root": "x", "balance_attributes": ["beard"]}, "folder sources have none"),
])
def test_bad_balance_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        FeatureClassifierDataModule(**kwargs)


def test_require_keys_are_not_balanced_by_default():
    dm = FeatureClassifierDataModule(feature="beard", require={"eyeglasses": False}, num_samples=8)
    assert dm.balance_attributes == ("bald", "smiling")


@pytest.mark.slow
def test_balanced_d2_ignores_beards(capsys):
    """A tiny D2 trained on SyntheticFaces whose bald positives are only 5 % bearded (real negatives
    ~50 %): with the balance, adding a beard to the same bald face moves D2's mean score by < 0.05."""
    import lightning as L

    from multifeat.data import SyntheticFaces
    from multifeat.phases import FeatureClassifier

    L.seed_everything(0, verbose=False)
    dm = FeatureClassifierDataModule(feature="bald", image_size=32, num_samples=1024, batch_size=64, val_fraction=0.0,
                                     epoch_size=2048, synthetic={"cache": True, "joint_fraction": 0.05})
    d2 = FeatureClassifier(image_size=32, feature="bald", width=16, max_width=64, lr=2e-3, loss="mse", lr_schedule="cosine")
    L.Trainer(max_epochs=6, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              limit_val_batches=0).fit(d2, dm)
    faces = SyntheticFaces(num_samples=256, image_size=32, seed=123, require={"bald": True, "beard": False})
    plain = [faces.params(i) for i in range(len(faces))]
    bearded = [{**p, "beard": np.ones_like(p["beard"])} for p in plain]
    x0, x1 = faces.render_params(plain), faces.render_params(bearded)
    assert (x0 - x1).abs().amax(dim=(1, 2, 3)).min() > 0.1  # every face really gains a beard
    p0, p1 = d2.predict_proba(x0), d2.predict_proba(x1)
    hair = SyntheticFaces(num_samples=256, image_size=32, seed=124, require={"bald": False})
    ph = d2.predict_proba(torch.stack([hair[i]["image"] for i in range(len(hair))]))
    with capsys.disabled():
        print(f"\nD2 mean score: bald {float(p0.mean()):.3f}, same faces with a beard {float(p1.mean()):.3f}, "
              f"with hair {float(ph.mean()):.3f}")
    assert float(p0.mean()) > 0.8 and float(ph.mean()) < 0.2  # D2 does tell bald from hair
    assert abs(float(p0.mean()) - float(p1.mean())) < 0.05


def test_d2_celeba_sources_are_decoded_once_and_keep_their_type(tmp_path, caplog):
    from multifeat.data import CelebADataset

    make_celeba(tmp_path, n=30, seed=5, partition=False)
    kw = dict(feature="bald", source="celeba", root=str(tmp_path), image_size=8, val_fraction=0.2, degraded=True)
    with caplog.at_level(logging.INFO, logger=RANK_ZERO):
        cached = FeatureClassifierDataModule(**kw)
        cached.setup()
    plain = FeatureClassifierDataModule(cache_mb=0, **kw)
    plain.setup()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("D2 data: cached")]
    assert len(lines) == 2 and "positive images" in lines[0] and "real_negative images" in lines[1]
    for (a, _), (b, _) in zip(cached.train_set.parts, plain.train_set.parts):
        if hasattr(a, "dataset"):
            assert isinstance(a.dataset, CelebADataset) and a.dataset.memory is not None and b.dataset.memory is None
    assert len(cached.train_set) == len(plain.train_set)
    for i in range(len(plain.train_set)):  # positives, real negatives and the degraded copies of positives
        x, y = cached.train_set[i], plain.train_set[i]
        assert torch.equal(x["image"], y["image"]) and x["source"] == y["source"]
    caplog.clear()
    big = FeatureClassifierDataModule(cache_mb=1, **{**kw, "image_size": 256})  # 3 x 256 x 256 bytes per image
    with caplog.at_level(logging.INFO, logger=RANK_ZERO):
        big.setup()
    assert big.train_set.parts[0][0].dataset.memory is None
    assert any(r.getMessage().startswith("D2 data: not caching the") and "cache_mb=1" in r.getMessage()
               for r in caplog.records)
