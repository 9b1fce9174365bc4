"""FeatureClassifierDataModule: sources, labels, balance, bank reading, degradations."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from multifeat.data import SOURCE_NAMES, FeatureClassifierDataModule, degrade
from multifeat.data.classifier_data import balanced_weights
from multifeat.errors import ConfigError, DataError


def write_bank(folder, n=6, size=16):
    """A negative bank written by hand: PNGs + index.json per the documented layout."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays, entries = [], []
    for i in range(n):
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        name = f"e{i:05d}_s00000000_000.png"
        Image.fromarray(arr).save(folder / name)
        arrays.append(arr)
        entries.append({"file": name, "epoch": i, "step": 0})
    (folder / "index.json").write_text(json.dumps({"format": 1, "entries": entries}))
    return arrays


def test_sources_labels_and_validation_coverage(tmp_path):
    arrays = write_bank(tmp_path / "bank", n=6)
    dm = FeatureClassifierDataModule(feature="bald", num_samples=20, image_size=16, bank_dir=str(tmp_path / "bank"),
                                     batch_size=8, val_fraction=0.2)
    dm.setup()
    assert dm.source_counts("train") == {"positive": 16, "real_negative": 16, "bank": 5, "degraded": 16}
    assert dm.source_counts("val") == {"positive": 4, "real_negative": 4, "bank": 1, "degraded": 4}
    seen = Counter()
    for batch in dm.val_dataloader():
        assert set(batch) == {"image", "label", "source"}
        assert batch["label"].dtype == torch.float32 and batch["source"].dtype == torch.long
        assert torch.equal(batch["label"], (batch["source"] == 0).float())
        seen.update(batch["source"].tolist())
    assert [seen[s] for s in range(4)] == [4, 4, 1, 4]
    # bank images come back as written (same size: no resampling)
    ds = dm.val_set
    k = int((ds.sources == 2).nonzero()[0])
    got = ((ds[k]["image"] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert any(np.array_equal(got, a) for a in arrays)


def test_positives_and_real_negatives_carry_the_right_feature():
    dm = FeatureClassifierDataModule(feature="beard", num_samples=16, image_size=16, degraded=False, val_fraction=0.25,
                                     require={"eyeglasses": False})
    dm.setup()
    for part, src in dm.train_set.parts:
        base = part.dataset
        for i in part.indices:
            a = base.attributes(i)
            assert a[1] == (1.0 if src == 0 else 0.0) and a[2] == 0.0


def test_sampler_balances_positives_and_negative_sources(tmp_path):
    write_bank(tmp_path / "bank", n=10)
    dm = FeatureClassifierDataModule(num_samples=200, image_size=16, bank_dir=str(tmp_path / "bank"), val_fraction=0.1,
                                     batch_size=32, epoch_size=6000)
    loader = dm.train_dataloader()
    drawn = torch.tensor(list(iter(loader.sampler)))
    src = dm.train_set.sources[drawn]
    frac = torch.bincount(src, minlength=4).double() / len(src)
    # positives 1/2; three negative sources 1/6 each, although the bank holds 9 images and the others 180
    assert abs(frac[0] - 0.5) < 0.03
    for s in (1, 2, 3):
        assert abs(frac[s] - 1 / 6) < 0.025, (SOURCE_NAMES[s], float(frac[s]))
    # deterministic order
    assert torch.equal(drawn, torch.tensor(list(iter(dm.train_dataloader().sampler))))


def test_balanced_weights_reference():
    sources = torch.tensor([0, 0, 0, 0, 1, 1, 3])
    w = balanced_weights(sources)
    want = torch.tensor([0.125] * 4 + [0.125, 0.125] + [0.25], dtype=torch.float64)
    assert torch.allclose(w, want)


def test_a_batch_has_every_field(tmp_path):
    dm = FeatureClassifierDataModule(num_samples=12, image_size=16, batch_size=8, epoch_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 16, 16) and batch["label"].shape == (8,) and batch["source"].shape == (8,)


def test_missing_or_empty_bank(tmp_path):
    dm = FeatureClassifierDataModule(num_samples=8, image_size=16, bank_dir=str(tmp_path / "absent"))
    with pytest.raises(DataError, match=r"absent.*phase 1"):
        dm.setup()
    (tmp_path / "empty").mkdir()
    dm = FeatureClassifierDataModule(num_samples=8, image_size=16, bank_dir=str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"empty.*phase 1"):
        dm.setup()


def test_folder_source(tmp_path):
    for name, colour in (("pos", (250, 0, 0)), ("neg", (0, 0, 250))):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.new("RGB", (16, 16), colour).save(tmp_path / name / f"{i}.png")
    dm = FeatureClassifierDataModule(source="folder", root=str(tmp_path / "pos"), negative_root=str(tmp_path / "neg"),
                                     image_size=16, degraded=False, val_fraction=0.25, batch_size=4)
    dm.setup()
    assert dm.source_counts("train") == {"positive": 3, "real_negative": 3, "bank": 0, "degraded": 0}
    for batch in dm.val_dataloader():
        red = batch["image"][:, 0].mean((1, 2)) > 0.5
        assert torch.equal(red, batch["label"] == 1)
    with pytest.raises(ConfigError, match="no negative source"):
        FeatureClassifierDataModule(source="folder", root=str(tmp_path / "pos"), degraded=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"feature": "hat"}, "feature"),
    ({"degrade_kinds": ["sharpen"]}, "sharpen"),
    ({"degrade_kinds": []}, "empty"),
    ({"degrade_strength": (0.8, 0.2)}, "degrade_strength"),
    ({"require": {"bald": True}}, "must not name"),
    ({"batch_size": 0}, "batch_size"),
    ({"image_size": 40}, "power of two"),
    ({"negative_root": "x"}, "negative_root"),
])
def test_argument_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        FeatureClassifierDataModule(**kwargs)


def test_degraded_copies_are_deterministic_and_unclear():
    dm = FeatureClassifierDataModule(num_samples=12, image_size=32, val_fraction=0.25, degrade_strength=(0.5, 1.0))
    dm.setup()
    (pos, _), deg = dm.train_set.parts[0], dm.train_set.parts[-1]
    assert deg[1] == 3
    ds = deg[0]
    kinds = set()
    for i in range(len(ds)):
        kind, strength, _ = ds.spec(i)
        kinds.add(kind)
        assert 0.5 <= strength <= 1.0
        a, b = ds[i]["image"], ds[i]["image"]
        assert torch.equal(a, b)  # same (seed, index) -> same degradation
        clean = pos[i]["image"]
        assert (a - clean).abs().mean() > 0.01
    assert len(kinds) >= 2


def test_degradation_kinds_reference():
    x = torch.zeros(3, 32, 32)
    x[:, :, ::2] = 1.0
    x[:, :, 1::2] = -1.0  # a stripe pattern at the highest frequency
    for kind in ("downsample", "blur"):
        y = degrade(x, kind, 1.0)
        assert y.shape == x.shape and y.abs().max() < 0.2, kind  # fine detail is gone
    const = torch.full((3, 16, 16), 0.3)
    assert torch.allclose(degrade(const, "blur", 0.5), const, atol=1e-6)
    assert torch.allclose(degrade(const, "downsample", 0.5), const, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    noisy = degrade(torch.zeros(3, 64, 64), "noise", 0.5, g)
    assert abs(noisy.std().item() - (0.05 + 0.45 * 0.5)) < 0.02
    with pytest.raises(ConfigError):
        degrade(x, "noise", 1.5)
