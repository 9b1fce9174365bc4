"""Phase 3 from the command line: the snapshot schedule warning and building under LightningCLI."""

import warnings

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

from multifeat.data.switching import SwitchingDataModule
from multifeat.phases.phase3 import Phase3GAN, ScheduleWarning

ARCH = {
    "g1": {"z_dim": 8, "image_size": 16, "width": 4, "max_width": 16, "norm": "batch"},
    "g1_source": "generator",
    "d3": {"image_size": 16, "width": 4, "max_width": 16, "norm": "none"},
    "d2": {"class_path": "multifeat.phases.feature_classifier.FeatureClassifier",
           "hparams": {"image_size": 16, "feature": "bald", "width": 4, "max_width": 8}},
}
QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
             accelerator="cpu", devices=1, reload_dataloaders_every_n_epochs=1)


def model(**kw):
    return Phase3GAN(g1_ckpt="unused.ckpt", d2_ckpt="unused.ckpt", arch=ARCH, add_blocks={16: 1}, num_fixed=4, **kw)


def data():  # 16 beard faces, batch 8: 2 batches per epoch
    return SwitchingDataModule(before={"beard": True, "bald": False}, after={"bald": True, "beard": False},
                               image_size=16, num_samples=16, batch_size=8, val_fraction=0.0)


@pytest.mark.parametrize("max_epochs, max_steps, batches, epoch, step, expect", [
    (5, -1, 16, 0, 0, ["snapshot_epoch=10", "max_epochs=5"]),    # the README's old example
    (10, -1, 16, 0, 0, ["snapshot_epoch=10", "max_epochs=10"]),  # epochs 0..9: epoch 10 never starts
    (11, -1, 16, 0, 0, None),
    (-1, 160, 16, 0, 0, ["snapshot_epoch=10", "max_steps=160", "step 161"]),  # 10 epochs x 16 = 160 steps
    (-1, 161, 16, 0, 0, None),
    (20, 100, 16, 0, 0, ["max_steps=100"]),                         # steps end it first
    (-1, 40, 4, 8, 32, ["max_steps=40"]),                           # resumed at epoch 8 (32 steps done): 32 + 2 x 4
    (-1, 41, 4, 8, 32, None),
    (-1, -1, 16, 0, 0, None),                                        # unlimited
])
def test_schedule_problem_hand_worked(max_epochs, max_steps, batches, epoch, step, expect):
    msg = model(snapshot_epoch=10).snapshot_schedule_problem(max_epochs, max_steps, batches, epoch, step)
    if expect is None:
        assert msg is None
    else:
        assert msg is not None and "\n" not in msg
        for part in expect:
            assert part in msg


def test_no_schedule_problem_without_snapshot_or_after_it():
    assert model(snapshot_epoch=None).snapshot_schedule_problem(1, -1, 16) is None
    m = model(snapshot_epoch=3)
    m.take_snapshot()
    assert m.snapshot_schedule_problem(1, -1, 16) is None


def test_fit_too_short_for_the_snapshot_warns_once():
    m = model(snapshot_epoch=2)
    with pytest.warns(ScheduleWarning, match=r"snapshot_epoch=2 is never reached: max_epochs=2") as rec:
        Trainer(max_epochs=2, **QUIET).fit(m, datamodule=data())
    assert len([w for w in rec if issubclass(w.category, ScheduleWarning)]) == 1
    assert not bool(m.snapshot_taken)


def test_fit_that_reaches_the_snapshot_does_not_warn():
    m = model(snapshot_epoch=1)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        Trainer(max_epochs=2, **QUIET).fit(m, datamodule=data())
    assert not [w for w in rec if issubclass(w.category, ScheduleWarning)]
    assert bool(m.snapshot_taken) and int(m.snapshot_at_epoch) == 1


def test_nested_modules_record_their_own_hparams_under_lightningcli():
    """LightningCLI builds the configured module inside a context that hands its init arguments to
    save_hyperparameters; D2, built inside Phase3GAN, must record its own (image_size 16, not None)."""
    import inspect

    given = {k: p.default for k, p in inspect.signature(Phase3GAN.__init__).parameters.items() if k != "self"}
    given.update(g1_ckpt="unused.ckpt", d2_ckpt="unused.ckpt", arch=ARCH, add_blocks={16: 1}, num_fixed=4)
    assert given["image_size"] is None  # what D2 recorded before the fix
    with _given_hyperparameters_context(hparams=given, instantiator="lightning.pytorch.cli.instantiate_module"):
        m = model()
    assert m.d2.hparams["image_size"] == 16 and m.d2.hparams["feature"] == "bald"
    assert m.hparams["g1_ckpt"] == "unused.ckpt"
