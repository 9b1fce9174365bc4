"""A partial CelebA copy whose official partition puts every image in train: splits are built when
the Trainer needs them, a seeded split stands in for an empty official split, and the memory cache."""

import logging
import warnings

import numpy as np
import pytest
import torch
from celeba_fixtures import CELEBA_COLUMNS, make_celeba
from lightning.pytorch import Trainer

from multifeat.data import AttributeDataModule, DataWarning, SwitchingDataModule
from multifeat.data.cache import MemoryCache
from multifeat.data.datamodule import split_indices
from multifeat.errors import ConfigError, DataError

RANK_ZERO = "lightning.pytorch.utilities.rank_zero"  # the logger of rank_zero_info lines

BALD = CELEBA_COLUMNS.index("Bald")


def train_only_tree(tmp_path, n=40, seed=1):
    """A CelebA-like tree whose ``list_eval_partition.txt`` lists every image as train (0)."""
    truth = make_celeba(tmp_path, n=n, seed=seed, partition=False)
    (truth["base"] / "list_eval_partition.txt").write_text("".join(f"{f} 0\n" for f in truth["files"]))
    bald = [f for f, row in zip(truth["files"], truth["values"]) if row[BALD] == 1]
    return truth, bald


def quiet_trainer(**kw):
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, **kw)


def test_manual_setup_falls_back_to_a_seeded_split_with_one_warning(tmp_path):
    _, bald = train_only_tree(tmp_path)
    assert len(bald) >= 10
    dm = AttributeDataModule(source="celeba", root=str(tmp_path), image_size=8, batch_size=4, require={"bald": True},
                             val_fraction=0.2, seed=5)
    with pytest.warns(DataWarning) as rec:
        dm.setup()
    msgs = [str(w.message) for w in rec if "seeded split" in str(w.message)]
    assert len(msgs) == 1
    n_val = int(round(len(bald) * 0.2))
    assert f"{len(bald)} in train, 0 in valid" in msgs[0]
    assert f"{len(bald) - n_val} train, {n_val} valid" in msgs[0]
    # the split is split_indices over the matching images in file order
    tr, va = split_indices(len(bald), 0.2, 5)
    assert dm.train_set.files == [bald[i] for i in tr]
    assert dm.val_set.files == [bald[i] for i in va]
    batch = next(iter(dm.val_dataloader()))
    assert batch["attrs"][:, 0].eq(1).all()


def test_official_partition_is_used_when_both_splits_match(tmp_path):
    truth = make_celeba(tmp_path, n=30, seed=2)  # parts i % 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        dm = AttributeDataModule(source="celeba", root=str(tmp_path), image_size=8, batch_size=2, cache_mb=0)
        dm.setup()
    assert dm.train_set.files == [f for f, p in zip(truth["files"], truth["parts"]) if p == 0]
    assert dm.val_set.files == [f for f, p in zip(truth["files"], truth["parts"]) if p == 1]


def test_validating_module_with_too_few_images_gets_a_clear_error(tmp_path):
    truth = make_celeba(tmp_path, n=6, seed=3, partition=False)
    (truth["base"] / "list_eval_partition.txt").write_text("".join(f"{f} 0\n" for f in truth["files"]))
    lines = (truth["base"] / "list_attr_celeba.txt").read_text().splitlines()
    rows = []
    for k, line in enumerate(lines[2:]):  # exactly one bald image
        toks = line.split()
        toks[1 + BALD] = "1" if k == 0 else "-1"
        rows.append(" ".join(toks))
    (truth["base"] / "list_attr_celeba.txt").write_text("\n".join(lines[:2] + rows) + "\n")
    dm = AttributeDataModule(source="celeba", root=str(tmp_path), image_size=8, require={"bald": True})
    with pytest.raises(DataError, match=r"require=\{'bald': True\} in split 'valid'.*too few"):
        dm.setup()
    # only test images match: nothing can serve training at all
    (truth["base"] / "list_eval_partition.txt").write_text("".join(f"{f} 2\n" for f in truth["files"]))
    dm = AttributeDataModule(source="celeba", root=str(tmp_path), image_size=8, require={"bald": True})
    with pytest.raises(DataError, match="official train or valid split.*0 in train, 0 in valid, 1 in test"):
        dm.setup()


def test_phase1_fit_on_a_train_only_partition_never_builds_validation(tmp_path):
    from multifeat.phases import Phase1GAN

    _, bald = train_only_tree(tmp_path)
    dm = AttributeDataModule(source="celeba", root=str(tmp_path), image_size=16, batch_size=4, require={"bald": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # no fallback either: the whole official train split trains
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        quiet_trainer(max_steps=3, limit_val_batches=0).fit(
            Phase1GAN(image_size=16, z_dim=8, g_width=4, d_width=4, max_width=16, num_fixed=4), datamodule=dm)
    assert dm.train_set.files == bald
    assert dm._val_set is None and dm.val_set is None
    # asked for explicitly, the empty official valid split is a clear error
    with pytest.raises(DataError, match=r"require=\{'bald': True\} in split 'valid'"):
        dm.val_dataloader()


def test_phase1_without_validation_step_needs_no_validation_split(tmp_path):
    """No limit_val_batches here: Phase1GAN has no validation_step, which is enough."""
    from multifeat.phases import Phase1GAN

    _, bald = train_only_tree(tmp_path)
    dm = AttributeDataModule(source="celeba", root=str(tmp_path), image_size=16, batch_size=4, require={"bald": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet_trainer(max_steps=2).fit(Phase1GAN(image_size=16, z_dim=8, g_width=4, d_width=4, max_width=16, num_fixed=4),
                                       datamodule=dm)
    assert dm.train_set.files == bald and dm._val_set is None


def test_switching_stages_skip_validation_too(tmp_path):
    _, bald = train_only_tree(tmp_path)

    class NoVal:
        limit_val_batches = 0
        lightning_module = None

    dm = SwitchingDataModule(before={"bald": False}, after={"bald": True}, switch_epoch=1, source="celeba",
                             root=str(tmp_path), image_size=8, batch_size=4)
    dm.trainer = NoVal()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        dm.setup("fit")
    assert dm.after.train_set.files == bald and dm.after.val_set is None


# --------------------------------------------------------------------------------- memory cache
def test_cached_batches_equal_decoded_batches(tmp_path, caplog):
    make_celeba(tmp_path, n=24, seed=4)
    kw = dict(source="celeba", root=str(tmp_path), image_size=16, batch_size=5, attributes=["smiling", "bald"], seed=2)
    plain = AttributeDataModule(cache_mb=0, **kw)
    cached = AttributeDataModule(**kw)
    with caplog.at_level(logging.INFO, logger=RANK_ZERO):
        a, b = list(plain.train_dataloader()), list(cached.train_dataloader())
    assert isinstance(cached.train_dataloader().dataset, MemoryCache)
    assert not isinstance(plain.train_dataloader().dataset, MemoryCache)
    assert len(a) == len(b) == 8 // 5
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["attrs"], y["attrs"])
        assert torch.equal(x["index"], y["index"]) and y["index"].dtype == torch.long
    line = [r.getMessage() for r in caplog.records if "cached 8 images" in r.getMessage()]
    assert len(line) == 1 and "celeba train split" in line[0] and "0.0 MiB of cache_mb=1024" in line[0]
    assert cached.cache_info["train"]["cached"] and cached.cache_info["train"]["images"] == 8
    # the loader is built once: later calls (a Trainer reloading every epoch) reuse it and its cache
    assert cached.train_dataloader() is cached.train_dataloader()


def test_cache_limit_is_respected_and_said(tmp_path, caplog):
    make_celeba(tmp_path, n=24, seed=4)
    dm = AttributeDataModule(source="celeba", root=str(tmp_path), image_size=512, batch_size=4, cache_mb=1)
    with caplog.at_level(logging.INFO, logger=RANK_ZERO):
        loader = dm.train_dataloader()  # 8 x 3 x 512 x 512 bytes = 6 MiB > 1 MiB
    assert not isinstance(loader.dataset, MemoryCache)
    assert any("not caching 8 decoded images (6.0 MiB > cache_mb=1)" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="cache_mb"):
        AttributeDataModule(source="celeba", root=str(tmp_path), cache_mb=-1)


def test_memory_cache_refuses_images_that_are_not_8_bit():
    class Smooth(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"image": torch.full((3, 4, 4), 0.001 * (i + 1)), "index": i}

    with pytest.raises(DataError, match="not 8-bit"):
        MemoryCache(Smooth())


def test_memory_cache_values_are_the_8_bit_values():
    class Known(torch.utils.data.Dataset):
        def __init__(self):
            self.u = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 3, 4, 4), dtype=np.uint8))

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"image": self.u[i].float().div(127.5).sub(1.0), "index": i}

    ds = Known()
    cache = MemoryCache(ds, batch_size=2)
    assert torch.equal(cache.images, ds.u) and cache.nbytes == 5 * 48
    assert [it["index"] for it in cache.__getitems__([4, 0])] == [4, 0]
