"""Phase 3: G3 grown from G1, frozen D2, the snapshot H, the data switch, AdaIN, reloading without G1/D2."""

import copy
import shutil

import pytest
import torch
from helpers import tiny_phase1
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from multifeat.data import AttributeDataModule, FeatureClassifierDataModule
from multifeat.data.switching import SwitchingDataModule
from multifeat.errors import CheckpointError, ConfigError
from multifeat.losses import phase3_g_loss
from multifeat.nets.adain import adain, channel_stats
from multifeat.phases.feature_classifier import FeatureClassifier
from multifeat.phases.phase1 import Phase1GAN
from multifeat.phases.phase3 import Phase3GAN

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)


def _fit_and_save(module, data, path, steps=2):
    trainer = Trainer(max_steps=steps, enable_checkpointing=False, limit_val_batches=0, **QUIET)
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(str(path))
    return path


def make_phase1(path, size=16, ema_decay=None, **kw):
    seed_everything(0, verbose=False)
    p1 = tiny_phase1(image_size=size, num_fixed=4, ema_decay=ema_decay, **kw)
    dm = AttributeDataModule(image_size=size, require={"bald": True}, num_samples=16, batch_size=8, val_fraction=0.0)
    return _fit_and_save(p1, dm, path)


def make_phase2(path, size=16):
    seed_everything(0, verbose=False)
    fc = FeatureClassifier(image_size=size, width=4, max_width=8)
    dm = FeatureClassifierDataModule(feature="bald", image_size=size, num_samples=16, batch_size=8, val_fraction=0.0)
    return _fit_and_save(fc, dm, path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("p3inputs")
    return {
        "g1": str(make_phase1(d / "p1.ckpt")),
        "g1_ema": str(make_phase1(d / "p1_ema.ckpt", ema_decay=0.5)),
        "g1_nearest": str(make_phase1(d / "p1_nearest.ckpt", upsample="nearest")),
        "d2": str(make_phase2(d / "p2.ckpt")),
        "d2_32": str(make_phase2(d / "p2_32.ckpt", size=32)),
        "dir": d,
    }


def switching_data(n=16):
    return SwitchingDataModule(before={"beard": True, "bald": False}, after={"bald": True, "beard": False},
                               image_size=16, num_samples=n, batch_size=8, val_fraction=0.0)


def _model(ckpts, **kw):
    kw = {"add_blocks": {8: 1, 16: 1}, "num_fixed": 4, **kw}
    return Phase3GAN(g1_ckpt=ckpts["g1"], d2_ckpt=ckpts["d2"], **kw)


# ---------------------------------------------------------------------------------------------- building
@pytest.mark.parametrize("which", ["g1", "g1_ema", "g1_nearest"])
def test_g3_equals_g1_at_initialisation(ckpts, which):
    m = Phase3GAN(g1_ckpt=ckpts[which], d2_ckpt=ckpts["d2"], add_blocks={8: 2, 16: 1}, num_fixed=4).eval()
    p1 = Phase1GAN.load_from_checkpoint(ckpts[which]).eval()
    z = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.equal(m(z), p1.generator_for_sampling(z))
        assert torch.equal(m.sample(5, seed=3), p1.sample(5, seed=3))
    assert m.hparams.arch["g1_source"] == ("ema" if which == "g1_ema" else "generator")
    assert m.hparams.arch["g1"]["upsample"] == ("nearest" if which == "g1_nearest" else "transpose")
    # D3 starts as D1, D2 as the phase-2 classifier
    for (k, a), (_, b) in zip(m.discriminator.state_dict().items(), p1.discriminator.state_dict().items()):
        assert torch.equal(a, b), k
    fc = FeatureClassifier.load_from_checkpoint(ckpts["d2"]).eval()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m.d2_prob(x), fc(x))


def test_g3_equals_g1_in_train_mode_with_same_bn_state(ckpts):
    m = _model(ckpts)
    p1 = Phase1GAN.load_from_checkpoint(ckpts["g1"])
    m.train(), p1.train()
    z = torch.randn(6, 8)
    assert torch.equal(m.generator(z), p1.generator(z))


def test_a_nearest_g3_reloads_from_its_own_checkpoint(ckpts, tmp_path):
    """The recorded architecture rebuilds G3 (and H) with G1's upsampling, so the weights fit and the
    reloaded G3 draws what the saved one drew."""
    m = Phase3GAN(g1_ckpt=ckpts["g1_nearest"], d2_ckpt=ckpts["d2"], add_blocks={8: 1}, num_fixed=4, snapshot_epoch=0)
    trainer = Trainer(max_epochs=1, reload_dataloaders_every_n_epochs=1, enable_checkpointing=False, **QUIET)
    trainer.fit(m, datamodule=switching_data())
    trainer.save_checkpoint(str(tmp_path / "g3.ckpt"))
    loaded = Phase3GAN.load_from_checkpoint(str(tmp_path / "g3.ckpt")).eval()
    assert any(isinstance(mod, torch.nn.Upsample) for mod in loaded.generator.modules())
    assert not any(isinstance(mod, torch.nn.ConvTranspose2d) for mod in loaded.generator.base.ups.modules())
    m.eval()
    torch.testing.assert_close(loaded.sample(3, seed=1), m.sample(3, seed=1), rtol=0, atol=0)


def test_validation_errors(ckpts, tmp_path):
    with pytest.raises(CheckpointError, match=r"classifies 32x32 images but g1_ckpt .* generates 16x16"):
        Phase3GAN(g1_ckpt=ckpts["g1"], d2_ckpt=ckpts["d2_32"])
    with pytest.raises(CheckpointError, match="expected a phase2 checkpoint"):
        Phase3GAN(g1_ckpt=ckpts["g1"], d2_ckpt=ckpts["g1"])
    with pytest.raises(CheckpointError, match="expected a phase1 checkpoint"):
        Phase3GAN(g1_ckpt=ckpts["d2"], d2_ckpt=ckpts["d2"])
    with pytest.raises(ConfigError, match="adain_at must be one of"):
        _model(ckpts, adain_at="feat64")
    with pytest.raises(ConfigError, match="image_size=32"):
        _model(ckpts, image_size=32)
    with pytest.raises(CheckpointError, match="d2_ckpt is not set"):
        Phase3GAN(g1_ckpt=ckpts["g1"])
    # a missing file: construction defers (a resume may not need it); a fresh fit names file and producer
    missing = str(tmp_path / "runs/phase2/checkpoints/last.ckpt")
    m = Phase3GAN(g1_ckpt=ckpts["g1"], d2_ckpt=missing)
    trainer = Trainer(max_epochs=1, enable_checkpointing=False, **QUIET)
    with pytest.raises(CheckpointError) as e:
        trainer.fit(m, datamodule=switching_data())
    assert str(e.value) == (f"d2_ckpt '{missing}' does not exist: run phase 2 first "
                            "(`multifeat fit --config experiments/phase2.yaml`)")


# ---------------------------------------------------------------------------------------------- D2 frozen
def test_d2_frozen_but_gradients_flow_through_it(ckpts):
    m = _model(ckpts, snapshot_epoch=None)
    assert not m.d2.training and all(not p.requires_grad for p in m.d2.parameters())
    m.train()  # D2 (and H) stay in eval mode
    assert not m.d2.training and not m.h.training and m.generator.training
    # G3's loss with only the D2 term (β1 = 0): G3 gets a gradient, D2 none
    z = torch.randn(8, 8)
    loss = phase3_g_loss(m.discriminator(m(z)), m.d2_prob(m(z)), beta=(0.0, 1.0))
    loss.backward()
    assert all(p.grad is None for p in m.d2.parameters())
    assert all(p.grad is None for p in m.discriminator.parameters()) is False  # D3 is in the graph
    g = [p.grad for p in m.generator.base.parameters() if p.grad is not None]
    assert g and sum(float(x.abs().sum()) for x in g) > 0


# ---------------------------------------------------------------------------------------------- schedule
class Recorder(Callback):
    """Per epoch: AdaIN state, data stage and the attributes of the first real batch; H vs G3 at the first batch."""

    def __init__(self):
        self.rows = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            e = trainer.current_epoch
            h_is_g3 = all(torch.equal(a, b) for a, b in zip(pl_module.h.state_dict().values(),
                                                             pl_module.generator.state_dict().values()))
            self.rows[e] = {
                "adain": pl_module.adain_active,
                "stage": trainer.datamodule.active_stage,
                "bald": batch["attrs"][:, 0].tolist(),
                "beard": batch["attrs"][:, 1].tolist(),
                "h_is_g3": h_is_g3,
            }


def test_snapshot_data_switch_and_frozen_d2_during_training(ckpts):
    m = _model(ckpts, snapshot_epoch=1, switch_epoch=2)
    d2_before = copy.deepcopy(m.d2.state_dict())
    g_before = copy.deepcopy(m.generator.state_dict())
    rec = Recorder()
    trainer = Trainer(max_epochs=3, enable_checkpointing=False, reload_dataloaders_every_n_epochs=1, callbacks=[rec],
                      log_every_n_steps=1, **QUIET)
    trainer.fit(m, datamodule=switching_data())
    # D2 never changed (and stayed in eval mode) while G3 did
    for k, v in m.d2.state_dict().items():
        assert torch.equal(v, d2_before[k]), f"D2 changed: {k}"
    assert any(not torch.equal(v, g_before[k]) for k, v in m.generator.state_dict().items())
    assert not m.d2.training
    for key in ("loss/d3", "loss/g3", "d2/fake_mean", "d3/real_mean", "d3/fake_mean", "phase3/adain_active"):
        assert key in trainer.callback_metrics
    # the schedule
    r = rec.rows
    assert [r[e]["adain"] for e in range(3)] == [False, True, True]
    assert r[1]["h_is_g3"] and not r[2]["h_is_g3"]  # H = G3 at the snapshot, then G3 moves on
    assert [r[e]["stage"] for e in range(3)] == ["before", "before", "after"]
    assert all(b == 1 for b in r[0]["beard"] + r[1]["beard"]) and all(b == 0 for b in r[0]["bald"] + r[1]["bald"])
    assert all(b == 1 for b in r[2]["bald"]) and all(b == 0 for b in r[2]["beard"])
    assert int(m.snapshot_at_epoch) == 1 and bool(m.snapshot_taken)
    assert m.data_switch_epoch == 2 and _model(ckpts, snapshot_epoch=7).data_switch_epoch == 7


def test_switching_data_requires_reloading(ckpts):
    m = _model(ckpts, snapshot_epoch=1)
    trainer = Trainer(max_epochs=2, enable_checkpointing=False, **QUIET)
    with pytest.raises(ConfigError, match="reload_dataloaders_every_n_epochs: 1"):
        trainer.fit(m, datamodule=switching_data())


def test_resume_after_snapshot_restores_h_without_the_input_files(ckpts, tmp_path):
    seed_everything(0, verbose=False)
    m = _model(ckpts, snapshot_epoch=1)
    ck = ModelCheckpoint(dirpath=str(tmp_path / "ck"), save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    trainer = Trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, callbacks=[ck], **QUIET)
    trainer.fit(m, datamodule=switching_data())
    h_final = copy.deepcopy(m.h.state_dict())
    g1_state = Phase1GAN.load_from_checkpoint(ckpts["g1"]).generator.state_dict()
    assert any(not torch.equal(h_final[f"base.{k}"], v) for k, v in g1_state.items())  # H is a trained G3

    # move the G1/D2 files away: neither reloading nor resuming may need them
    moved = tmp_path / "moved"
    moved.mkdir()
    g1, d2 = shutil.copy(ckpts["g1"], moved), shutil.copy(ckpts["d2"], moved)
    cfg = dict(g1_ckpt=str(tmp_path / "gone/p1.ckpt"), d2_ckpt=str(tmp_path / "gone/p2.ckpt"), add_blocks={8: 1, 16: 1},
               num_fixed=4, snapshot_epoch=1)

    loaded = Phase3GAN.load_from_checkpoint(str(tmp_path / "ck/epoch=1.ckpt"))
    assert loaded.adain_active and all(torch.equal(v, h_final[k]) for k, v in loaded.h.state_dict().items())

    class HAtStart(Callback):
        def on_train_start(self, trainer, pl_module):
            self.h = copy.deepcopy(pl_module.h.state_dict())
            self.taken = bool(pl_module.snapshot_taken)

    seen = HAtStart()
    resumed = Phase3GAN(**cfg)
    assert not resumed.built
    t2 = Trainer(max_epochs=3, reload_dataloaders_every_n_epochs=1, enable_checkpointing=False, callbacks=[seen], **QUIET)
    t2.fit(resumed, datamodule=switching_data(), ckpt_path=str(tmp_path / "ck/epoch=1.ckpt"))
    assert seen.taken and all(torch.equal(v, h_final[k]) for k, v in seen.h.items())
    assert all(torch.equal(v, h_final[k]) for k, v in resumed.h.state_dict().items())  # H stays frozen

    # resuming from before the snapshot takes it at the configured epoch
    seen0 = HAtStart()
    t3 = Trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, enable_checkpointing=False, callbacks=[seen0], **QUIET)
    again = Phase3GAN(**{**cfg, "g1_ckpt": g1, "d2_ckpt": d2})
    t3.fit(again, datamodule=switching_data(), ckpt_path=str(tmp_path / "ck/epoch=0.ckpt"))
    assert not seen0.taken and bool(again.snapshot_taken) and int(again.snapshot_at_epoch) == 1


# ---------------------------------------------------------------------------------------------- AdaIN
@pytest.mark.parametrize("point, content", [("feat8", "h"), ("feat16", "h"), ("feat16", "g3"), ("image", "h"), ("image", "g3")])
def test_adain_combination(ckpts, point, content):
    m = _model(ckpts, adain_at=point, adain_content=content).eval()
    z = torch.randn(4, 8)
    with torch.no_grad():
        g3_alone = m.generator(z)
        m.take_snapshot()
        # H == G3 right after the snapshot: AdaIN(x, x) = x up to eps
        torch.testing.assert_close(m(z), g3_alone, atol=2e-3, rtol=0)
        for p in m.generator.parameters():  # G3 moves on
            p.add_(torch.randn_like(p) * 0.05)
        combined, g3_only = m(z), m.generator(z)
    assert not torch.allclose(combined, g3_only, atol=1e-3)
    if point == "image":
        with torch.no_grad():
            g_map, h_map = m.generator.pre_tanh(z), m.h.pre_tanh(z)
            c, s = (h_map, g_map) if content == "h" else (g_map, h_map)
            expected = torch.tanh(adain(c, s))
        torch.testing.assert_close(combined, expected)
    else:
        res = int(point[4:])
        captured = {}

        def grab(r, h):
            if r == res:
                captured["h"] = h
            return h

        with torch.no_grad():
            h_feat = m.h.features(z, res)
            g_feat = m.generator.features(z, res)
            m(z, hook=grab)
        c, s = (h_feat, g_feat) if content == "h" else (g_feat, h_feat)
        # the combined map: the style's per-channel statistics, the content's layout
        mean_out, _ = channel_stats(captured["h"])
        mean_s, _ = channel_stats(s)
        torch.testing.assert_close(mean_out, mean_s, atol=1e-5, rtol=0)
        # with eps: var(out) = (var(s) + eps) · var(c) / (var(c) + eps)
        var = lambda t: t.var(dim=(2, 3), unbiased=False)  # noqa: E731
        expected = (var(s) + 1e-5) * var(c) / (var(c) + 1e-5)
        torch.testing.assert_close(var(captured["h"]), expected, atol=1e-5, rtol=1e-3)
        # the layout: each output channel is the content channel up to a positive scale and a shift, so
        # both normalise to the same map. These feature maps vary little (std ~1e-3), so no threshold:
        # every channel that varies at all is compared, and there must be such channels.
        def normalised(t):
            return (t - t.mean(dim=(2, 3), keepdim=True)) / t.std(dim=(2, 3), unbiased=False, keepdim=True)

        varies = c.std(dim=(2, 3), unbiased=False) > 1e-5
        assert int(varies.sum()) >= varies.numel() // 2, c.std(dim=(2, 3), unbiased=False)
        torch.testing.assert_close(normalised(captured["h"])[varies], normalised(c)[varies], rtol=0, atol=5e-3)
    # disabled: the plain G3 image
    m.hparams.adain_enabled = False
    with torch.no_grad():
        assert torch.equal(m(z), m.generator(z))


# ---------------------------------------------------------------------------------------------- D2's views
def test_d2_sees_the_images_as_drawn_unless_views_are_asked_for(ckpts):
    m = _model(ckpts).eval()
    assert m.d2_view_pipe is None
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m.d2_score(x), m.d2_prob(x))


def test_d2_views_keep_the_face_upright_and_its_colours_and_pass_gradients(ckpts):
    from multifeat.phases.phase3 import D2_VIEW_OPS

    m = _model(ckpts, d2_views=3, d2_view_p=1.0).eval()
    pipe = m.d2_view_pipe
    assert pipe is not None and float(pipe.p) == 1.0
    params = pipe.sample_params(512, 16, 16)
    assert torch.all(params.rotate90 == 0) and torch.all(params.lumaflip == 0) and torch.all(params.hue == 0)
    assert float((params.xflip != 0).float().mean()) > 0.3 and float(params.xint.abs().amax()) > 0  # views do vary
    assert set(D2_VIEW_OPS) == {"xflip", "xint", "scale", "xfrac", "brightness", "contrast", "saturation", "noise"}
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    torch.manual_seed(5)
    score = m.d2_score(x)
    torch.manual_seed(5)
    by_hand = torch.stack([m.d2_prob(pipe(x)) for _ in range(3)]).mean(0)
    torch.testing.assert_close(score, by_hand)
    assert not torch.allclose(score, m.d2_prob(x), atol=1e-4)  # the views change what D2 sees
    score.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize("kw, match", [({"d2_views": -1}, "d2_views must be an integer >= 0"),
                                       ({"d2_views": 1.5}, "d2_views must be an integer >= 0"),
                                       ({"d2_view_p": 0.0}, r"d2_view_p must be a probability in \(0, 1\]"),
                                       ({"d2_view_p": 1.5}, r"d2_view_p must be a probability in \(0, 1\]")])
def test_bad_d2_view_settings_are_named(ckpts, kw, match):
    with pytest.raises(ConfigError, match=match):
        _model(ckpts, **kw)


def test_training_with_d2_views_logs_d2_as_drawn_and_reloads(ckpts, tmp_path):
    m = _model(ckpts, d2_views=2, snapshot_epoch=0)
    logged = {}

    class Keep(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer = Trainer(max_epochs=1, reload_dataloaders_every_n_epochs=1, enable_checkpointing=False, limit_val_batches=0,
                      callbacks=[Keep()], log_every_n_steps=1, **{**QUIET, "logger": CSVLogger(str(tmp_path))})
    trainer.fit(m, datamodule=switching_data())
    assert "d2/fake_plain_mean" in logged and "d2/fake_mean" in logged
    trainer.save_checkpoint(str(tmp_path / "v.ckpt"))
    loaded = Phase3GAN.load_from_checkpoint(str(tmp_path / "v.ckpt"))
    assert loaded.hparams.d2_views == 2 and loaded.d2_view_pipe is not None
