"""ADA augmentation of the DCGAN phases' discriminators (GANModule) and the EMA ramp-up of Phase1GAN."""

import math

import pytest
import torch
from helpers import make_phase3_inputs, quiet_trainer, tiny_cgan, tiny_data, tiny_phase1, tiny_phase3
from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader, TensorDataset

from multifeat.errors import ConfigError
from multifeat.nets.ema import ema_rampup_decay
from multifeat.phases.phase1 import Phase1GAN

IMAGES = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1


def loader():
    return DataLoader(TensorDataset(IMAGES), batch_size=8, shuffle=False)


def record_inputs(net):
    seen = []
    net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen


# ---------------------------------------------------------------------------------------------- D's inputs
def test_phase1_d_sees_augmented_reals_and_fakes():
    seed_everything(0, verbose=False)
    m = tiny_phase1(num_fixed=4, augment="bgc", augment_p=1.0, ada_target=None)
    seen = record_inputs(m.discriminator)
    quiet_trainer(1).fit(m, loader())
    real_in, fake_d_in, fake_g_in = seen  # D step: real, fake; G step: fake
    assert real_in.shape == IMAGES[:8].shape
    assert not torch.equal(real_in, IMAGES[:8])
    # the same fakes, augmented afresh for the G step
    assert not torch.equal(fake_d_in, fake_g_in)


def test_phase1_without_augmentation_d_sees_raw_images():
    seed_everything(0, verbose=False)
    m = tiny_phase1(num_fixed=4)
    assert m.augment_pipe is None and m.ada is None
    assert not any(k.startswith(("augment_pipe", "ada")) for k in m.state_dict())
    seen = record_inputs(m.discriminator)
    quiet_trainer(1).fit(m, loader())
    assert torch.equal(seen[0], IMAGES[:8])


def test_p_zero_pipe_trains_exactly_like_no_pipe():
    """A pipe at p = 0 is skipped: the weights follow the run without augmentation bit for bit."""
    states = []
    for kw in ({}, {"augment": "bgc", "augment_p": 0.0, "ada_target": None}):
        seed_everything(0, verbose=False)
        m = tiny_phase1(num_fixed=4, ema_decay=0.9, **kw)
        quiet_trainer(3).fit(m, loader())
        states.append(m.state_dict())
    plain, piped = states
    assert set(piped) - set(plain) == {"augment_pipe.p", "ada.stats"}
    for k in plain:
        assert torch.equal(plain[k], piped[k]), k


def test_cgan_d_sees_augmented_images():
    seed_everything(0, verbose=False)
    m = tiny_cgan(attributes=["bald", "beard"], attribute_names=["bald", "beard"], num_fixed=4,
                  augment="bgc", augment_p=1.0, ada_target=None)
    seen = record_inputs(m.discriminator)
    attrs = torch.tensor([[0.0, 1.0], [1.0, 0.0]] * 4)
    data = [{"image": IMAGES[i], "attrs": attrs[i]} for i in range(8)]
    quiet_trainer(1).fit(m, DataLoader(data, batch_size=8, shuffle=False))
    assert not torch.equal(seen[0], IMAGES[:8])


@pytest.fixture(scope="module")
def phase3_inputs(tmp_path_factory):
    return make_phase3_inputs(tmp_path_factory.mktemp("p3aug"))


def test_phase3_augments_d3_but_not_the_frozen_d2(phase3_inputs):
    seed_everything(0, verbose=False)
    m = tiny_phase3(phase3_inputs, augment="bgc", augment_p=1.0, ada_target=None, snapshot_epoch=None)
    d3_seen, d2_seen = record_inputs(m.discriminator), record_inputs(m.d2)
    quiet_trainer(1).fit(m, datamodule=tiny_data(require={"beard": True, "bald": False}))
    # D step: D3(aug real), D3(aug fake), D2(fake); G step: D3(aug fake), D2(fake)
    assert len(d3_seen) == 3 and len(d2_seen) == 2
    assert torch.equal(d2_seen[0], d2_seen[1])  # D2 gets the raw fakes
    assert not torch.equal(d3_seen[1], d2_seen[0])
    assert not torch.equal(d3_seen[2], d2_seen[1])


# ---------------------------------------------------------------------------------------------- gradients
def test_gradients_reach_g_through_the_augmentation():
    seed_everything(0, verbose=False)
    m = tiny_phase1(num_fixed=4, augment="bgc", augment_p=1.0, ada_target=None)
    z = torch.randn(8, m.z_dim)
    fake = m.generator(z)
    aug = m.d_input(fake)
    assert not torch.equal(aug, fake)
    m.discriminator(aug).square().mean().backward()
    grads = [p.grad for p in m.generator.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


# ---------------------------------------------------------------------------------------------- the controller
@pytest.mark.parametrize(
    ("d_real", "expected_p"),
    [
        (0.9, 0.5 + 0.08),   # D puts every real far on the real side (memorised): more augmentation
        (0.55, 0.5 + 0.08),  # just above the LSGAN threshold 0.5: still the real side
        (0.45, 0.5 - 0.08),  # below 0.5 (though > 0): the fake side, D underfits: less augmentation
        (0.1, 0.5 - 0.08),
    ],
)
def test_p_moves_with_the_lsgan_statistic(d_real, expected_p):
    # batch 8, interval 1, ada_kimg 0.1: each adjustment moves p by 8 * 1 / 100 = 0.08
    m = tiny_phase1(augment="bgc", augment_p=0.5, ada_target=0.6, ada_interval=1, ada_kimg=0.1)
    m.observe_real(torch.full((8,), d_real))
    logs = m.ada_step(8)
    assert float(m.augment_pipe.p) == pytest.approx(expected_p)
    assert logs["ada/p"] == pytest.approx(expected_p)
    assert logs["ada/rt"] == (1.0 if d_real > 0.5 else -1.0)


def test_p_waits_for_the_interval_and_mixed_statistic():
    # interval 4: a batch at global step 0 only accumulates
    m = tiny_phase1(augment="bgc", augment_p=0.1, ada_target=0.6, ada_interval=4, ada_kimg=0.1)
    m.observe_real(torch.tensor([0.9, 0.8, 0.7, 0.2]))  # r_t = (1 + 1 + 1 - 1) / 4 = 0.5 < 0.6
    assert m.ada_step(4) == {"ada/p": pytest.approx(0.1)}
    assert float(m.ada.stats[1]) == 4
    m.ada.adjust(4)  # the end of an interval, by hand: 4 * 4 / 100 = 0.16 down from 0.1, clamped at 0
    assert float(m.augment_pipe.p) == 0.0


def test_resume_keeps_p_and_logs_it(tmp_path):
    # target 1: a fresh D never puts every real above 0.5, so p falls by 8 / 1000 every batch
    kw = dict(num_fixed=4, augment="bgc", augment_p=0.5, ada_target=1.0, ada_interval=1, ada_kimg=1.0)
    seed_everything(0, verbose=False)
    m = tiny_phase1(**kw)
    t = quiet_trainer(4, log_every_n_steps=1)
    t.fit(m, loader())
    p_saved = float(m.augment_pipe.p)
    assert p_saved == pytest.approx(0.5 - 4 * 0.008)
    assert float(t.callback_metrics["ada/p"]) == pytest.approx(p_saved)
    ckpt = tmp_path / "a.ckpt"
    t.save_checkpoint(str(ckpt))
    assert float(torch.load(ckpt, weights_only=True)["state_dict"]["augment_pipe.p"]) == p_saved
    assert float(Phase1GAN.load_from_checkpoint(str(ckpt)).augment_pipe.p) == p_saved
    resumed = tiny_phase1(**kw)
    quiet_trainer(5).fit(resumed, loader(), ckpt_path=str(ckpt))
    assert float(resumed.augment_pipe.p) == pytest.approx(p_saved - 0.008)


def test_bad_augmentation_settings_are_config_errors():
    with pytest.raises(ConfigError, match="preset"):
        tiny_phase1(augment="nope")
    with pytest.raises(ConfigError, match="augment_p"):
        tiny_phase1(augment="bgc", augment_p=1.5)
    with pytest.raises(ConfigError, match="ada_interval"):
        tiny_phase1(augment="bgc", ada_interval=0)
    with pytest.raises(ConfigError, match="ema_decay"):
        tiny_phase1(ema_rampup=0.05)
    with pytest.raises(ConfigError, match="ema_rampup"):
        tiny_phase1(ema_decay=0.99, ema_rampup=-1)


# ---------------------------------------------------------------------------------------------- EMA ramp-up
def test_ema_rampup_decay_by_hand():
    # decay 0.99 per batch of 32 = a half-life of 32 * ln 0.5 / ln 0.99 = 2206.9 images
    assert ema_rampup_decay(0.99, None, 10_000, 32) == 0.99
    assert ema_rampup_decay(0.99, 0.05, 0, 32) == 0.0  # first update: copy G
    assert ema_rampup_decay(0.99, 0.05, 320, 32) == pytest.approx(0.25)  # half-life 16: 0.5 ** 2
    assert ema_rampup_decay(0.99, 0.05, 3200, 32) == pytest.approx(0.5**0.2)  # half-life 160
    assert ema_rampup_decay(0.99, 0.05, 1e6, 32) == pytest.approx(0.99)  # ramp over: the full decay
    # the official formula with ema_kimg = 2206.9 / 1000 gives the same numbers
    ema_nimg = min(2.2069 * 1000, 3200 * 0.05)
    assert 0.5 ** (32 / ema_nimg) == pytest.approx(ema_rampup_decay(0.99, 0.05, 3200, 32))
    assert 32 * math.log(0.5) / math.log(0.99) == pytest.approx(2206.9, abs=0.1)


def test_phase1_ema_ramp_copies_g_first_then_follows_the_ramp():
    seed_everything(0, verbose=False)
    m = tiny_phase1(num_fixed=4, ema_decay=0.99, ema_rampup=0.05)
    decays = []
    orig = m.ema.update
    m.ema.update = lambda model, decay=None: (decays.append(decay), orig(model, decay=decay))
    t = quiet_trainer(1)
    t.fit(m, loader())
    for pe, pl in zip(m.ema.module.parameters(), m.generator.parameters()):
        assert torch.equal(pe, pl)  # decay 0 at the first batch
    quiet_trainer(3).fit(m, loader(), ckpt_path=None)
    # batches 2 and 3 of the second fit start a fresh global step count; check the formula on them
    assert decays[0] == 0.0
    assert decays[1:] == [0.0, pytest.approx(0.5 ** (8 / (8 * 0.05))), pytest.approx(0.5 ** (8 / (16 * 0.05)))]
