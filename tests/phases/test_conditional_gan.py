"""The conditional-GAN baseline: label handling, training steps, sampling, checkpoints, config."""

import itertools
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from multifeat.errors import ConfigError, NonFiniteLossError
from multifeat.phases.conditional_gan import ConditionalGAN

NAMES = ("bald", "beard", "eyeglasses", "smiling")  # the package's attribute order
TINY = dict(image_size=16, z_dim=8, g_width=4, d_width=4, max_width=16, embed_dim=4)


class TinyFaces(Dataset):
    """Random images with every attribute combination except bald AND beard (columns ``names``)."""

    def __init__(self, n=32, size=16, names=NAMES, nan=False):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, size, size, generator=g) * 2 - 1
        if nan:
            self.images[:] = float("nan")
        combos = [c for c in itertools.product([0.0, 1.0], repeat=len(names))]
        b, d = names.index("bald"), names.index("beard")
        combos = [c for c in combos if not (c[b] == 1 and c[d] == 1)]
        self.attrs = torch.tensor([combos[i % len(combos)] for i in range(n)])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "attrs": self.attrs[i], "index": i}


class TinyData(L.LightningDataModule):
    def __init__(self, names=NAMES, **kw):
        super().__init__()
        self.attribute_names = tuple(names)
        self.ds = TinyFaces(names=names, **kw)

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=8, shuffle=False)


def trainer(steps, **kw):
    args = dict(
        accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    args.update(kw)
    return L.Trainer(**args)


def test_unknown_names_are_clear_config_errors():
    with pytest.raises(ConfigError, match=r"'mustache'.*valid names: bald, beard, eyeglasses, smiling"):
        ConditionalGAN(attributes=["bald", "mustache"], **TINY)
    with pytest.raises(ConfigError, match=r"'hat'.*conditioned on: bald, beard"):
        ConditionalGAN(sample_labels={"hat": True}, **TINY)
    m = ConditionalGAN(**TINY)
    with pytest.raises(ConfigError, match=r"'eyeglasses'.*conditioned on: bald, beard"):
        m.sample(2, labels={"eyeglasses": True})
    with pytest.raises(ConfigError, match="more than once"):
        ConditionalGAN(attributes=["bald", "bald"], **TINY)
    with pytest.raises(ConfigError, match=r"shape \[2\] or \[3, 2\]"):
        m.sample(3, labels=torch.ones(3))
    # names outside the package's list are fine when the data's names are given
    ConditionalGAN(attributes=["Goatee"], attribute_names=["Bald", "Goatee"], **TINY)
    # ... and checked against the data module's columns when training starts
    m2 = ConditionalGAN(attributes=["eyeglasses"], **TINY)
    with pytest.raises(ConfigError, match=r"'eyeglasses' not among .*valid names: bald, beard, smiling"):
        m2.resolve_columns(["bald", "beard", "smiling"])


def test_sample_labels_shapes_range_and_seed():
    torch.manual_seed(0)
    m = ConditionalGAN(attributes=["bald", "beard", "smiling"], sample_labels={"bald": True, "beard": True}, **TINY)
    m.train()
    a = m.sample(5, seed=3, labels={"bald": True, "beard": True})
    assert a.shape == (5, 3, 16, 16) and a.dtype == torch.float32
    torch.testing.assert_close(m.sample(5, seed=3, labels={"bald": True, "beard": True}), a)
    assert not torch.allclose(m.sample(5, seed=4, labels={"bald": True, "beard": True}), a)
    assert m.generator.training  # mode restored
    # no-argument sampling uses sample_labels; a dict, a tensor [A] and a tensor [n, A] agree
    torch.testing.assert_close(m.sample(5, seed=3), a)
    torch.testing.assert_close(m.sample(5, seed=3, labels=torch.tensor([1.0, 1.0, 0.0])), a)
    torch.testing.assert_close(m.sample(5, seed=3, labels=torch.tensor([[1.0, 1.0, 0.0]] * 5)), a)
    assert not torch.allclose(m.sample(5, seed=3, labels={"smiling": True}), a)
    # chunking does not change the images
    torch.testing.assert_close(m.sample(5, seed=3, batch_size=2), a)
    assert m.sample(4).shape == (4, 3, 16, 16)
    assert m.sample(0).shape == (0, 3, 16, 16)
    # default sample_labels = every conditioning attribute present
    d = ConditionalGAN(**TINY)
    torch.testing.assert_close(d.labels_tensor(None, 2), torch.ones(2, 2))


def test_training_steps_labels_losses_and_weights():
    """Columns are picked by name from the data's order; fake labels are a shuffle of the real ones."""
    torch.manual_seed(0)
    names = ("smiling", "beard", "eyeglasses", "bald")  # not the package order
    data = TinyData(names=names)
    m = ConditionalGAN(attributes=["bald", "beard"], attribute_names=list(names), **TINY)
    g_labels, d_labels = [], []
    m.generator.register_forward_pre_hook(lambda mod, args: g_labels.append(args[1].detach().clone()))
    m.discriminator.register_forward_pre_hook(lambda mod, args: d_labels.append(args[1].detach().clone()))
    before_g = [p.detach().clone() for p in m.generator.parameters()]
    before_d = [p.detach().clone() for p in m.discriminator.parameters()]

    class Record(L.Callback):
        def __init__(self):
            self.rows = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    rec = Record()
    t = trainer(6, callbacks=[rec], log_every_n_steps=1)  # the scalars are logged on logging steps only
    t.fit(m, datamodule=data)
    assert t.global_step == 6  # one step per batch, not per optimizer

    # labels of the first batch: columns 3 (bald) and 1 (beard) of the data's attrs
    real = data.ds.attrs[:8][:, [3, 1]]
    torch.testing.assert_close(d_labels[0], real)  # D on real images, real labels
    fake = g_labels[0]
    torch.testing.assert_close(d_labels[1], fake)  # D on fakes, the fakes' labels
    torch.testing.assert_close(d_labels[2], fake)  # G step
    key = lambda rows: sorted(map(tuple, rows.tolist()))  # noqa: E731
    assert key(fake) == key(real)  # same multiset of combinations
    assert not any(r == (1.0, 1.0) for r in key(torch.cat(g_labels)))  # never bald AND beard in training

    assert len(rec.rows) == 6
    for k in ("loss/d", "loss/g", "d/real_mean", "d/fake_mean"):
        vals = [r[k] for r in rec.rows]
        assert all(math.isfinite(v) for v in vals), k
        assert max(vals) - min(vals) > 1e-4, f"{k} did not move: {vals}"
    assert any(not torch.equal(a, b) for a, b in zip(before_g, m.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, m.discriminator.parameters()))
    # the projection embedding is trained too
    assert not torch.equal(before_d[-1], m.discriminator.embed.weight.detach())


def test_non_finite_loss_stops_training():
    m = ConditionalGAN(**TINY)
    with pytest.raises(NonFiniteLossError, match=r"cgan: loss term 'loss_d'"):
        trainer(2).fit(m, datamodule=TinyData(nan=True))


def test_checkpoint_round_trip_weights_only(tmp_path):
    torch.manual_seed(0)
    m = ConditionalGAN(sample_labels={"bald": True, "beard": True}, **TINY)
    t = trainer(2)
    t.fit(m, datamodule=TinyData())
    path = tmp_path / "cgan.ckpt"
    t.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["multifeat"]["phase"] == "cgan" and ckpt["multifeat"]["image_size"] == 16
    loaded = ConditionalGAN.load_from_checkpoint(path, weights_only=True)
    assert loaded.hparams.attributes == ["bald", "beard"]
    assert loaded.hparams.sample_labels == {"bald": True, "beard": True}
    m.eval()
    torch.testing.assert_close(loaded.sample(4, seed=7), m.sample(4, seed=7))
    for (k, a), (_, b) in zip(m.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    from multifeat.io.checkpoints import load_phase_module

    again = load_phase_module(path, expect_phase="cgan")
    torch.testing.assert_close(again.sample(4, seed=7), m.sample(4, seed=7))


def test_trains_on_attribute_datamodule_without_joint_images(tmp_path):
    from multifeat.data import AttributeDataModule

    torch.manual_seed(0)
    dm = AttributeDataModule(source="synthetic", image_size=16, num_samples=48, synthetic={"joint_fraction": 0.0},
                             batch_size=16, val_fraction=0.0, seed=0)
    m = ConditionalGAN(attributes=["beard", "bald"], **TINY)  # order differs from the data's columns
    t = trainer(3)
    t.fit(m, datamodule=dm)
    assert t.global_step == 3
    names = list(dm.attribute_names)
    assert m._columns == [names.index("beard"), names.index("bald")]
    attrs = torch.stack([dm.train_set[i]["attrs"] for i in range(len(dm.train_set))])
    both = (attrs[:, names.index("bald")] == 1) & (attrs[:, names.index("beard")] == 1)
    assert not both.any()  # the combination sampled below never occurs in training
    x = m.sample(6, seed=0, labels={"bald": True, "beard": True})
    assert x.shape == (6, 3, 16, 16)


def test_experiment_config_builds_and_runs(tmp_path, monkeypatch):
    from multifeat.cli import build_cli

    monkeypatch.chdir(tmp_path)  # the config's checkpoints go to runs/cgan/ under the working directory
    from multifeat.data import AttributeDataModule

    config = Path(__file__).resolve().parents[2] / "experiments" / "cgan.yaml"
    cli = build_cli(
        [
            "--config", str(config),
            "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=2",
            "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
            "--data.init_args.num_samples=32", "--data.init_args.batch_size=8",
            "--model.init_args.g_width=4", "--model.init_args.d_width=4", "--model.init_args.max_width=16",
        ],
        run=False,
    )
    assert isinstance(cli.model, ConditionalGAN) and isinstance(cli.datamodule, AttributeDataModule)
    assert cli.model.hparams.attributes == ["bald", "beard"]
    assert cli.model.hparams.sample_labels == {"bald": True, "beard": True}
    assert cli.datamodule.synthetic["joint_fraction"] == 0.0 and cli.datamodule.image_size == 32
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2
    # the config's SampleGrid (no dirpath: <log dir>/samples) draws the fixed noise at sample_labels
    assert (tmp_path / "samples" / "latest.png").is_file()
    assert cli.model.sample(3, seed=1).shape == (3, 3, 32, 32)


def test_upsampling_choice_reaches_the_generator_and_bad_values_are_named():
    from torch import nn

    from multifeat.errors import ConfigError

    m = ConditionalGAN(**{**TINY, "upsample": "nearest"})
    kinds = {type(mod) for mod in m.generator.net.ups.modules()}
    assert nn.Upsample in kinds and nn.ConvTranspose2d not in kinds
    assert m.hparams.upsample == "nearest" and m.generator(torch.randn(2, m.hparams.z_dim), torch.ones(2, 2)).shape[-1] == 16
    with pytest.raises(ConfigError, match="upsample must be one of transpose, nearest"):
        ConditionalGAN(**{**TINY, "upsample": "pixelshuffle"})
