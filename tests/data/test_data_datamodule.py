"""AttributeDataModule: deterministic splits, batches, argument validation, config friendliness."""

import pytest
import torch

from multifeat.data import ATTRIBUTES, AttributeDataModule, SyntheticFaces
from multifeat.data.datamodule import split_indices
from multifeat.errors import ConfigError


def test_split_indices_reference():
    tr, va = split_indices(10, 0.3, seed=0)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()
    assert va == sorted(perm[:3]) and tr == sorted(perm[3:])
    assert split_indices(3, 0.01, 0)[1] != []  # at least one validation item
    assert split_indices(5, 0.0, 0) == ([0, 1, 2, 3, 4], [])


def test_synthetic_splits_are_deterministic_and_disjoint():
    a = AttributeDataModule(num_samples=50, image_size=16, batch_size=8, seed=3)
    b = AttributeDataModule(num_samples=50, image_size=16, batch_size=8, seed=3)
    c = AttributeDataModule(num_samples=50, image_size=16, batch_size=8, seed=4)
    for dm in (a, b, c):
        dm.setup()
    assert a.train_set.indices == b.train_set.indices and a.val_set.indices == b.val_set.indices
    assert a.val_set.indices != c.val_set.indices
    assert len(a.val_set) == 5 and len(a.train_set) == 45
    assert set(a.train_set.indices).isdisjoint(a.val_set.indices)
    # the shuffled order of the first epoch is reproducible too
    first = [bt["index"].tolist() for bt in a.train_dataloader()]
    again = [bt["index"].tolist() for bt in b.train_dataloader()]
    assert first == again and len(first) == 45 // 8


def test_batches_match_the_dataset():
    dm = AttributeDataModule(num_samples=40, image_size=32, batch_size=6, seed=1, require={"bald": True},
                             attributes=["smiling", "bald"], synthetic={"attribute_probs": {"smiling": 0.3}})
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["attrs"].shape == (4, 2)
    assert batch["index"].dtype == torch.long
    ref = SyntheticFaces(num_samples=40, image_size=32, seed=1, require={"bald": True}, attribute_probs={"smiling": 0.3})
    for k, i in enumerate(batch["index"].tolist()):
        item = ref[i]
        assert torch.equal(batch["image"][k], item["image"])
        assert batch["attrs"][k].tolist() == [item["attrs"][3].item(), item["attrs"][0].item()]
    assert (batch["attrs"][:, 1] == 1).all()
    assert dm.attribute_names == ("smiling", "bald")
    assert AttributeDataModule(num_samples=8).attribute_names == ATTRIBUTES


def test_small_train_set_keeps_the_incomplete_batch():
    dm = AttributeDataModule(num_samples=10, image_size=16, batch_size=64, val_fraction=0.2)
    with pytest.warns(UserWarning, match="fewer than batch_size"):
        batches = list(dm.train_dataloader())
    assert len(batches) == 1 and batches[0]["image"].shape[0] == 8


@pytest.mark.parametrize("kwargs, match", [
    ({"source": "imagenet"}, "source"),
    ({"image_size": 48}, "power of two"),
    ({"image_size": 0}, "power of two"),
    ({"image_size": -64}, "power of two"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": -2}, "batch_size"),
    ({"num_workers": -1}, "num_workers"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"val_fraction": -0.1}, "val_fraction"),
    ({"num_samples": 0}, "num_samples"),
    ({"seed": -5}, "seed"),
    ({"synthetic": {"jointfraction": 0.1}}, "unknown option"),
    ({"source": "celeba"}, "root"),
    ({"source": "folder"}, "root"),
    ({"attributes": ["hat"]}, "hat"),
    ({"require": {"bald": True}, "synthetic": {"attribute_probs": {"bald": 0.0}}}, "impossible|no synthetic face"),
    ({"require": {"bald": True, "beard": True}, "synthetic": {"joint_fraction": 0.0}}, "joint_fraction"),
    ({"folder_attrs": {"bald": 1}}, "folder_attrs"),
    ({"crop": 0}, "crop"),
])
def test_argument_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AttributeDataModule(**kwargs)


def test_configurable_by_class_path():
    """LightningCLI configs name the module by class_path; its typed signature must parse."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--data", type=AttributeDataModule)
    cfg = parser.parse_object({"data": {"class_path": "multifeat.data.AttributeDataModule",
                                        "init_args": {"image_size": 32, "num_samples": 16, "require": {"bald": True},
                                                      "synthetic": {"joint_fraction": 0.1}, "batch_size": 4}}})
    dm = parser.instantiate(cfg).data
    assert isinstance(dm, AttributeDataModule)
    assert dm.image_size == 32 and dm.require == {"bald": True} and dm.synthetic == {"joint_fraction": 0.1}
    assert dm.hparams["batch_size"] == 4


@pytest.mark.slow
def test_worker_processes_give_the_same_batches():
    a = AttributeDataModule(num_samples=48, image_size=16, batch_size=8, num_workers=0, seed=2)
    b = AttributeDataModule(num_samples=48, image_size=16, batch_size=8, num_workers=2, seed=2)
    for x, y in zip(a.train_dataloader(), b.train_dataloader()):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["image"], y["image"])
