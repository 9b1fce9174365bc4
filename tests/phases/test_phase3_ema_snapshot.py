"""Phase 3's ``snapshot_source: ema``: H is taken from an exponential moving average of G3, checked
against the average worked out by hand from G3's weights after every update."""

import pytest
import torch
from helpers import make_phase3_inputs, quiet_trainer, tiny_data, tiny_phase3
from lightning.pytorch import Callback, seed_everything

from multifeat.errors import ConfigError


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_phase3_inputs(tmp_path_factory.mktemp("p3ema"))


class RecordG3(Callback):
    """G3's parameters at the start and after every batch (every batch makes one G3 update)."""

    def __init__(self):
        self.weights = []

    def _take(self, module):
        self.weights.append([p.detach().clone() for p in module.generator.parameters()])

    def on_train_start(self, trainer, module):
        self._take(module)

    def on_train_batch_end(self, trainer, module, *args):
        self._take(module)


def test_ema_snapshot_matches_a_hand_computed_average(inputs):
    decay = 0.7
    seed_everything(0, verbose=False)
    m = tiny_phase3(inputs, snapshot_source="ema", snapshot_ema_decay=decay, snapshot_epoch=None)
    rec = RecordG3()
    quiet_trainer(3, callbacks=[rec]).fit(m, datamodule=tiny_data(require={"beard": True, "bald": False}))
    assert len(rec.weights) == 4  # the start (G1 grown) and three updates
    # ema_0 = G3 at the start; ema_t = decay * ema_{t-1} + (1 - decay) * G3_t, parameter by parameter
    expected = [w.clone() for w in rec.weights[0]]
    for step in rec.weights[1:]:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, step)]
    got = list(m.g3_ema.module.parameters())
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    # the average is not the live G3 (the updates moved G3 away from it)
    assert any(not torch.allclose(g, w) for g, w in zip(got, rec.weights[-1]))
    # the snapshot copies the average (parameters and batch-norm statistics) into H, not the live G3
    m.take_snapshot()
    for e, h in zip(expected, m.h.parameters()):
        torch.testing.assert_close(h, e, rtol=1e-5, atol=1e-6)
    for hb, gb in zip(m.h.buffers(), m.generator.buffers()):
        assert torch.equal(hb, gb)
    assert any(k.startswith("g3_ema.") for k in m.state_dict())


def test_live_snapshot_is_the_default_and_keeps_no_average(inputs):
    seed_everything(0, verbose=False)
    m = tiny_phase3(inputs, snapshot_epoch=None)
    assert m.hparams.snapshot_source == "live" and m.g3_ema is None
    quiet_trainer(2).fit(m, datamodule=tiny_data(require={"beard": True, "bald": False}))
    m.take_snapshot()
    for g, h in zip(m.generator.parameters(), m.h.parameters()):
        assert torch.equal(g, h)
    assert not any(k.startswith("g3_ema.") for k in m.state_dict())


def test_ema_snapshot_survives_a_checkpoint(inputs, tmp_path):
    from multifeat.phases.phase3 import Phase3GAN

    seed_everything(0, verbose=False)
    m = tiny_phase3(inputs, snapshot_source="ema", snapshot_ema_decay=0.5, snapshot_epoch=None)
    t = quiet_trainer(2)
    t.fit(m, datamodule=tiny_data(require={"beard": True, "bald": False}))
    t.save_checkpoint(str(tmp_path / "p3.ckpt"))
    back = Phase3GAN.load_from_checkpoint(str(tmp_path / "p3.ckpt"))
    assert back.g3_ema is not None and int(back.g3_ema.num_updates) == 2
    for a, b in zip(m.g3_ema.module.parameters(), back.g3_ema.module.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kw, needle", [({"snapshot_source": "average"}, "snapshot_source"),
                                        ({"snapshot_source": "ema", "snapshot_ema_decay": 1.0}, "snapshot_ema_decay")])
def test_bad_snapshot_settings_are_named(inputs, kw, needle):
    with pytest.raises(ConfigError, match=needle):
        tiny_phase3(inputs, **kw)
