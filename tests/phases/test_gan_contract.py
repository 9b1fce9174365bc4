"""The contract every GAN phase keeps (they share :class:`multifeat.phases.gan.GANModule`'s update):

- one global step per batch, however many optimizer steps the batch makes;
- the finite check on every ``finite_check_every_n_steps``-th batch: a NaN at a checked batch stops
  training with :class:`NonFiniteLossError` naming that step and leaves the discriminator's weights
  of that batch untouched; a NaN at an unchecked batch does not stop training at that batch;
- the scalars are logged on the logger's steps only (``log_every_n_steps``);
- a run saved mid-way and resumed ends with the same weights, bit for bit, as an uninterrupted run.

Each check runs on Phase1GAN, ConditionalGAN, Phase3GAN and StyleGAN2ADA at tiny size.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import (
    make_phase3_inputs,
    quiet_trainer,
    tiny_cgan,
    tiny_data,
    tiny_phase1,
    tiny_phase3,
    tiny_stylegan2,
)
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from multifeat.errors import NonFiniteLossError
from multifeat.phases.gan import GANModule

KINDS = ["phase1", "cgan", "phase3", "stylegan2"]
#: the loss term that a NaN real image makes non-finite first
D_TERM = {"phase1": "loss_d", "cgan": "loss_d", "phase3": "loss_d3", "stylegan2": "loss_D"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_phase3_inputs(tmp_path_factory.mktemp("gan_contract"))


def build(kind: str, inputs: dict[str, str], **kw) -> tuple[GANModule, L.LightningDataModule]:
    """(module, data) of ``kind``, seeded: two builds with the same arguments are identical."""
    L.seed_everything(0, workers=True, verbose=False)
    if kind == "phase1":
        return tiny_phase1(ema_decay=0.9, num_fixed=4, **kw), tiny_data()
    if kind == "cgan":
        return tiny_cgan(**kw), tiny_data(attributes=["bald", "beard"])
    if kind == "phase3":
        return tiny_phase3(inputs, snapshot_epoch=1, **kw), tiny_data()
    # lazy regularisation on every 2nd batch, ADA moving p: the batches differ in their optimizer steps
    return tiny_stylegan2(r1_interval=2, pl_interval=2, augment="bgc", augment_p=0.3, ada_interval=1,
                          ada_kimg=0.1, style_mixing_prob=0.5, **kw), tiny_data()


class Steps(Callback):
    """global_step after each batch, and the optimizer steps (on_before_optimizer_step) per batch."""

    def __init__(self) -> None:
        self.after_batch: list[int] = []
        self.optimizer_steps: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.optimizer_steps.append(0)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.optimizer_steps[-1] += 1

    def on_train_batch_end(self, trainer, *args) -> None:
        self.after_batch.append(trainer.global_step)


class NaNImagesAt(Callback):
    """Replaces the real images of the batch at global step ``step`` by NaN; keeps D's parameters at its start
    (its batch-norm statistics move in the forward pass, before any loss exists)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.d_before: dict[str, torch.Tensor] | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch["image"].fill_(float("nan"))
            self.d_before = {k: v.detach().clone() for k, v in pl_module.d_net.named_parameters()}


class Rows(Logger):
    """The rows the trainer writes to its logger: (step, names)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, set[str]]] = []

    @property
    def name(self) -> str:
        return "rows"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append((step, set(metrics)))


@pytest.mark.parametrize("kind", KINDS)
def test_one_global_step_per_batch(kind, inputs):
    module, data = build(kind, inputs)
    steps = Steps()
    quiet_trainer(6, callbacks=[steps]).fit(module, datamodule=data)
    assert steps.after_batch == [1, 2, 3, 4, 5, 6]
    # ... while every batch made at least two optimizer steps (D and G, and the lazy regularisers)
    assert min(steps.optimizer_steps) >= 2, steps.optimizer_steps
    if kind == "stylegan2":
        assert steps.optimizer_steps == [4, 2, 4, 2, 4, 2]


@pytest.mark.parametrize("kind", KINDS)
def test_nan_at_a_checked_step_stops_training_with_the_weights_of_that_step_untouched(kind, inputs):
    module, data = build(kind, inputs, finite_check_every_n_steps=2)
    nan = NaNImagesAt(step=2)
    with pytest.raises(NonFiniteLossError, match=rf"loss term '{D_TERM[kind]}' became nan at global step 2 "):
        quiet_trainer(6, callbacks=[nan]).fit(module, datamodule=data)
    after = dict(module.d_net.named_parameters())
    assert nan.d_before is not None
    changed = [k for k, v in nan.d_before.items() if not torch.equal(v, after[k])]
    assert not changed, f"the discriminator changed in the stopped step: {changed[:4]}"


@pytest.mark.parametrize("kind", KINDS)
def test_nan_at_an_unchecked_step_is_not_caught_there(kind, inputs):
    module, data = build(kind, inputs, finite_check_every_n_steps=2)
    nan = NaNImagesAt(step=1)
    steps = Steps()
    try:
        quiet_trainer(4, callbacks=[nan, steps]).fit(module, datamodule=data)
    except NonFiniteLossError as e:  # the NaN weights it left are caught at the next checked step
        assert "global step 2" in str(e), str(e)
        assert steps.after_batch == [1, 2]  # step 1 (global step 1 -> 2) finished unchecked
    else:  # StyleGAN2-ADA zeroes non-finite gradients, so the NaN batch leaves its weights finite
        assert kind == "stylegan2" and steps.after_batch == [1, 2, 3, 4]
    assert nan.d_before is not None


@pytest.mark.parametrize("kind", KINDS)
def test_scalars_are_logged_on_the_loggers_steps_only(kind, inputs):
    module, data = build(kind, inputs)
    calls: list[int] = []
    log = module.log

    def spy(*args, **kwargs):
        calls.append(module.global_step)
        return log(*args, **kwargs)

    module.log = spy
    rows = Rows()
    quiet_trainer(6, logger=rows, log_every_n_steps=2).fit(module, datamodule=data)
    # self.log runs after the batch is counted: on batches 1, 3, 5 (0-based, global step 2, 4, 6 by then), the
    # batches whose rows the logger writes (under their step 1, 3, 5) ...
    assert sorted(set(calls)) == [2, 4, 6]
    assert [step for step, _ in rows.rows] == [1, 3, 5]
    # ... and those rows hold the losses
    loss_keys = {"phase1": {"loss/d", "loss/g"}, "cgan": {"loss/d", "loss/g"}, "phase3": {"loss/d3", "loss/g3"},
                 "stylegan2": {"loss/D", "loss/G", "loss/r1", "loss/pl"}}[kind]
    for _, names in rows.rows:
        assert loss_keys <= names, names


def _fit(kind, inputs, steps, root, ckpt_path=None, save_every=None):
    module, data = build(kind, inputs)
    callbacks = [ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=save_every, save_top_k=-1)] if save_every else []
    trainer = quiet_trainer(steps, default_root_dir=root, deterministic=True, callbacks=callbacks,
                            enable_checkpointing=bool(save_every))
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_resume_mid_run_is_bit_exact(kind, inputs, tmp_path):
    # 6 batches = 1.5 epochs of 4 batches; the checkpoint at step 3 is mid-epoch (for Phase 3: before the snapshot
    # at the start of epoch 1, which the resumed run takes itself)
    reference = _fit(kind, inputs, 6, tmp_path / "ref", save_every=3)
    ckpt = tmp_path / "ref" / "ckpt" / "epoch=0-step=3.ckpt"
    resumed = _fit(kind, inputs, 6, tmp_path / "resumed", ckpt_path=str(ckpt))
    ref, got = reference.state_dict(), resumed.state_dict()
    assert ref.keys() == got.keys()
    differ = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not differ, f"{len(differ)} of {len(ref)} tensors differ after the resume, e.g. {differ[:4]}"
    # and the resumed run did train: its weights are not the ones saved mid-way
    mid = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(not torch.equal(mid[k], got[k]) for k in mid if mid[k].is_floating_point())
