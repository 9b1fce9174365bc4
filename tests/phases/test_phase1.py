"""Phase 1 (G1/D1 LSGAN): against a plain PyTorch loop, EMA, the NaN guard, checkpoints, sampling."""

from __future__ import annotations

import copy
import csv

import lightning as L
import pytest
import torch
from helpers import tiny_phase1
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from multifeat.errors import ConfigError, NonFiniteLossError
from multifeat.io.checkpoints import load_checkpoint, load_phase_module
from multifeat.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from multifeat.phases import Phase1GAN


def _images(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g) * 2 - 1


def _loader(n=32, batch_size=8):
    return DataLoader(TensorDataset(_images(n)), batch_size=batch_size, shuffle=False)


def _trainer(tmp_path, max_steps, **kw):
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kw,
    )


class RecordingG(nn.Module):
    """Wraps a generator and records the noise of every call (to replay it in a plain loop)."""

    def __init__(self, g: DCGANGenerator) -> None:
        super().__init__()
        self.g, self.z_dim, self.image_size = g, g.z_dim, g.image_size
        self.zs: list[torch.Tensor] = []

    def forward(self, z):
        self.zs.append(z.detach().clone())
        return self.g(z)


def _plain_loop(g, d, batches, zs, d_steps_per_g, lr_g, lr_d, betas=(0.5, 0.999)):
    """The reference: Phase 1 written as a plain PyTorch loop with the losses typed out by hand."""
    opt_g = torch.optim.Adam(g.parameters(), lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=lr_d, betas=betas)
    last = {}
    for i, (x, z) in enumerate(zip(batches, zs)):
        fake = g(z)
        d_real, d_fake = d(x), d(fake.detach())
        loss_d = ((d_real - 1) ** 2).mean() + (d_fake**2).mean()
        last.update({"loss/d": loss_d.item(), "d/real_mean": d_real.mean().item(), "d/fake_mean": d_fake.mean().item()})
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        if (i + 1) % d_steps_per_g == 0:
            loss_g = ((d(fake) - 1) ** 2).mean()
            last["loss/g"] = loss_g.item()
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
    return g, d, last


@pytest.mark.parametrize("d_steps_per_g", [1, 2])
def test_training_matches_plain_pytorch_loop(tmp_path, d_steps_per_g):
    torch.manual_seed(0)
    g0 = DCGANGenerator(z_dim=8, image_size=16, width=4, max_width=16)
    d0 = DCGANDiscriminator(image_size=16, width=4, max_width=16)
    rec = RecordingG(copy.deepcopy(g0))
    model = tiny_phase1(lr_g=1e-2, lr_d=5e-3, d_steps_per_g=d_steps_per_g, generator=rec, discriminator=copy.deepcopy(d0))
    trainer = _trainer(tmp_path, max_steps=4, log_every_n_steps=1)
    trainer.fit(model, _loader())
    # one global step per batch, whatever the number of optimizers
    assert trainer.global_step == 4
    assert len(rec.zs) == 4
    batches = list(_images().split(8))
    g_ref, d_ref, last = _plain_loop(copy.deepcopy(g0), copy.deepcopy(d0), batches, rec.zs, d_steps_per_g, 1e-2, 5e-3)
    for key, value in last.items():  # the logged scalars of the last step
        assert float(trainer.logged_metrics[key]) == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for (name, a), b in zip(rec.g.state_dict().items(), g_ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"G1 {name}")
    for (name, a), b in zip(model.discriminator.state_dict().items(), d_ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"D1 {name}")
    # and training changed them (the comparison is not between two untouched copies)
    assert not torch.equal(model.discriminator.head.weight, d0.head.weight)
    assert not torch.equal(rec.g.to_rgb.weight, g0.to_rgb.weight)


def test_d_steps_per_g_updates_generator_on_every_kth_batch(tmp_path):
    model = tiny_phase1(d_steps_per_g=3, ema_decay=0.5)
    trainer = _trainer(tmp_path, max_steps=4)
    before = model.generator.to_rgb.weight.detach().clone()
    snapshots = []

    class Snap(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            snapshots.append(pl_module.generator.to_rgb.weight.detach().clone())

    trainer.callbacks.append(Snap())
    trainer.fit(model, _loader())
    changed = [not torch.equal(a, b) for a, b in zip([before] + snapshots[:-1], snapshots)]
    assert changed == [False, False, True, False]  # batch_idx 2 is the only G step in 4 batches
    assert int(model.ema.num_updates) == 1


def test_logs_losses_and_discriminator_means_on_logging_steps(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    model = tiny_phase1()
    trainer = _trainer(tmp_path, max_steps=4, log_every_n_steps=2, logger=CSVLogger(tmp_path, name="csv"))
    trainer.fit(model, _loader())
    logged = trainer.logged_metrics
    for key in ("loss/d", "loss/g", "d/real_mean", "d/fake_mean"):
        assert key in logged and torch.isfinite(logged[key])
    assert {"loss/d", "loss/g"} <= set(trainer.progress_bar_metrics)
    rows = list(csv.DictReader(open(next(tmp_path.glob("csv/version_*/metrics.csv")))))
    assert [int(r["step"]) for r in rows] == [1, 3]  # steps 2 and 4 (0-based 1, 3), nothing in between
    assert all(r["loss/d"] and r["loss/g"] and r["d/real_mean"] and r["d/fake_mean"] for r in rows)


def test_ema_follows_hand_recursion(tmp_path):
    decay = 0.75
    model = tiny_phase1(ema_decay=decay, lr_g=1e-2)
    expected = {k: v.detach().clone() for k, v in model.generator.named_parameters()}

    class Recurse(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            for k, p in pl_module.generator.named_parameters():
                expected[k] = decay * expected[k] + (1 - decay) * p.detach()

    trainer = _trainer(tmp_path, max_steps=3, callbacks=[Recurse()])
    trainer.fit(model, _loader())
    for k, p in model.ema.module.named_parameters():
        torch.testing.assert_close(p, expected[k], rtol=1e-5, atol=1e-7, msg=k)
    for (k, b), live in zip(model.ema.module.named_buffers(), model.generator.buffers()):
        assert torch.equal(b, live), k  # BN statistics are copied, not averaged
    assert not torch.equal(model.ema.module.to_rgb.weight, model.generator.to_rgb.weight)
    # sampling uses the EMA copy
    assert model.generator_for_sampling is model.ema.module


class NaNAt(nn.Module):
    """A discriminator whose output is NaN on its ``at``-th call (3 calls per batch: real, fake, G step)."""

    def __init__(self, d, at):
        super().__init__()
        self.d, self.at, self.calls = d, at, 0

    def forward(self, x):
        self.calls += 1
        out = self.d(x)
        return out * float("nan") if self.calls == self.at else out


@pytest.mark.parametrize("call, term", [(7, "loss_d"), (9, "loss_g")])  # batch 3 (global step 2)
def test_nan_loss_stops_training_naming_phase_step_and_term(tmp_path, call, term):
    d = NaNAt(DCGANDiscriminator(image_size=16, width=4, max_width=16), at=call)
    model = tiny_phase1(discriminator=d)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1, save_top_k=-1)
    trainer = _trainer(tmp_path, max_steps=10, callbacks=[ckpt], enable_checkpointing=True)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(model, _loader())
    msg = str(info.value)
    assert "phase1" in msg and f"'{term}'" in msg and "global step 2" in msg
    saved = load_checkpoint(tmp_path / "ckpt" / "last.ckpt", expect_phase="phase1")
    assert saved["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    # the guard runs before the optimizer step: the live weights stay finite too
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_checkpoint_roundtrip_weights_only(tmp_path):
    model = tiny_phase1(ema_decay=0.9, num_fixed=6)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = _trainer(tmp_path, max_steps=2, callbacks=[ckpt], enable_checkpointing=True)
    trainer.fit(model, _loader())
    path = tmp_path / "ckpt" / "last.ckpt"
    raw = load_checkpoint(path, expect_phase="phase1")
    assert raw["multifeat"]["class_path"] == "multifeat.phases.phase1.Phase1GAN"
    assert raw["multifeat"]["image_size"] == 16
    assert any(k.startswith("ema.module.") for k in raw["state_dict"])
    loaded = Phase1GAN.load_from_checkpoint(path, weights_only=True)
    generic = load_phase_module(path, expect_phase="phase1")
    assert isinstance(generic, Phase1GAN)
    for m in (loaded, generic):
        torch.testing.assert_close(m.sample(5, seed=3), model.sample(5, seed=3))
        torch.testing.assert_close(m.sample_fixed(), model.sample_fixed())
    assert model.sample_fixed().shape == (6, 3, 16, 16)


def test_sample_is_seeded_and_leaves_rng_and_mode_alone():
    model = tiny_phase1()
    model.train()
    state = torch.get_rng_state()
    a = model.sample(4, seed=7)
    b = model.sample(4, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and a.shape == (4, 3, 16, 16)
    assert not torch.equal(a, model.sample(4, seed=8))
    assert model.generator.training  # mode restored
    # eval mode: BatchNorm running statistics are not touched by sampling
    stats = [b.clone() for b in model.generator.buffers()]
    model.sample(4, seed=1, ema=False)
    assert all(torch.equal(x, y) for x, y in zip(stats, model.generator.buffers()))
    with pytest.raises(ConfigError, match="ema_decay"):
        model.sample(2, ema=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image_size=24), "image_size"),
        (dict(d_steps_per_g=0), "d_steps_per_g"),
        (dict(lr_g=0.0), "lr_g"),
        (dict(betas_d=(0.5, 1.5)), "betas_d"),
        (dict(ema_decay=1.0), "ema_decay"),
        (dict(norm_g="layer"), "norm"),
    ],
)
def test_bad_arguments_raise_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        tiny_phase1(**kwargs)


def test_hparams_are_primitive_and_custom_networks_are_flagged():
    g = DCGANGenerator(z_dim=12, image_size=16, width=4, max_width=16)
    model = Phase1GAN(image_size=32, z_dim=99, generator=g)
    hp = dict(model.hparams)
    assert "generator" not in hp and "discriminator" not in hp
    assert hp["z_dim"] == 12 and hp["image_size"] == 16 and hp["custom_generator"] is True
    assert all(isinstance(v, (int, float, str, bool, list, type(None))) for v in hp.values())


# ------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow  # starting W&B's service process takes seconds
def test_cli_with_the_default_wandb_offline_logger(tmp_path, monkeypatch):
    """experiments/phase1.yaml at tiny size with its own logger: W&B offline run files appear and the
    run's scalars and sample grids go to it."""
    from pathlib import Path

    import yaml

    from multifeat.cli import main as cli_main
    from multifeat.io.bank import read_bank

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    repo = Path(__file__).resolve().parents[2]
    cfg = yaml.safe_load((repo / "experiments" / "phase1.yaml").read_text())
    assert cfg["trainer"]["logger"]["class_path"] == "multifeat.loggers.WandbLogger"
    cfg["trainer"].update(max_steps=4, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    cfg["model"]["init_args"].update(image_size=16, z_dim=8, g_width=4, d_width=4, max_width=16, ema_decay=0.9)
    cfg["data"]["init_args"].update(image_size=16, num_samples=32, batch_size=8)
    for cb in cfg["trainer"]["callbacks"]:
        if cb["class_path"].endswith("NegativeBank"):
            cb["init_args"].update(every_n_steps=2, per_save=3)
        if cb["class_path"].endswith("SampleGrid"):
            cb["init_args"].update(every_n_steps=2)
    (tmp_path / "p1.yaml").write_text(yaml.safe_dump(cfg))
    assert cli_main(["fit", "--config", "p1.yaml"]) == 0
    import wandb

    wandb.finish()  # in-process the run stays open after fit (a CLI process closes it at exit)
    runs = list(Path("runs/phase1/wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(Path("runs/phase1").rglob("*"))
    assert list(runs[0].glob("run-*.wandb")), list(runs[0].iterdir())
    media = list(runs[0].rglob("*.png"))  # the sample grids logged as images
    assert media, list(runs[0].rglob("*"))
    assert len(read_bank("runs/phase1/negatives")) == 6
    assert Path("runs/phase1/checkpoints/last.ckpt").is_file()
    assert Path("runs/phase1/samples/latest.png").is_file()


def test_data_of_another_image_size_is_refused_before_training():
    import lightning as L

    from multifeat.data import AttributeDataModule
    from multifeat.errors import ConfigError

    model = tiny_phase1()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dm = AttributeDataModule(image_size=32, num_samples=16, batch_size=8, val_fraction=0.0)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    with pytest.raises(ConfigError, match="serves 32x32 images but Phase1GAN is configured for 16x16"):
        trainer.fit(model, dm)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
