"""``precision="bf16-mixed"`` on CPU for every LightningModule of the package: a few steps run under
autocast (layers really compute in bfloat16), every logged loss stays finite, the weights stay
float32, and the checkpoint written during training loads back into a working module."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import tiny_phase1
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from multifeat.data import AttributeDataModule, FeatureClassifierDataModule
from multifeat.io.checkpoints import load_phase_module

STEPS = 3


class Watch(Callback):
    """Logged loss values after every batch, and the dtypes the layers produced while training."""

    def __init__(self, loss_keys: tuple[str, ...]):
        self.loss_keys = loss_keys
        self.losses: dict[str, list[float]] = {k: [] for k in loss_keys}
        self.dtypes: set[torch.dtype] = set()
        self._hooks: list = []

    def on_train_start(self, trainer, pl_module):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and module.training:
                self.dtypes.add(output.dtype)

        for m in pl_module.modules():
            if m is not pl_module:
                self._hooks.append(m.register_forward_hook(hook))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for k in self.loss_keys:
            if k in trainer.callback_metrics:
                self.losses[k].append(float(trainer.callback_metrics[k]))

    def on_train_end(self, trainer, pl_module):
        for h in self._hooks:
            h.remove()


def _attr_data(**kw):
    return AttributeDataModule(**{"image_size": 16, "num_samples": 32, "batch_size": 8, "val_fraction": 0.0, **kw})


def phase1(_):
    return tiny_phase1(num_fixed=4), _attr_data(require={"bald": True}), ("loss/d", "loss/g"), {}


def feature_classifier(_):
    from multifeat.phases import FeatureClassifier

    data = FeatureClassifierDataModule(feature="bald", image_size=16, num_samples=32, batch_size=8, val_fraction=0.25)
    return FeatureClassifier(image_size=16, width=4, max_width=8), data, ("loss/train",), {"limit_val_batches": 1}


def phase3(inputs):
    from multifeat.data.switching import SwitchingDataModule
    from multifeat.phases import Phase3GAN

    module = Phase3GAN(g1_ckpt=str(inputs / "phase1.ckpt"), d2_ckpt=str(inputs / "phase2.ckpt"), add_blocks={8: 1},
                       adain_at="feat8", snapshot_epoch=1, num_fixed=4)
    data = SwitchingDataModule(before={"beard": True, "bald": False}, after={"bald": True, "beard": False},
                               image_size=16, num_samples=32, batch_size=8, val_fraction=0.0)
    # 2 batches per epoch: the snapshot (epoch 1) and AdaIN run under bf16 too
    return module, data, ("loss/d3", "loss/g3"), {"reload_dataloaders_every_n_epochs": 1, "limit_train_batches": 2}


def stylegan2ada(_):
    from multifeat.phases import StyleGAN2ADA

    module = StyleGAN2ADA(image_size=16, z_dim=8, w_dim=8, channel_base=64, channel_max=8, mbstd_group_size=2,
                          num_fixed=4, r1_interval=2, pl_interval=2, augment_p=0.2)
    return module, _attr_data(), ("loss/G", "loss/D"), {}


def conditional_gan(_):
    from multifeat.phases import ConditionalGAN

    module = ConditionalGAN(image_size=16, z_dim=8, g_width=4, d_width=4, max_width=16, embed_dim=4)
    return module, _attr_data(), ("loss/d", "loss/g"), {}


def attribute_evaluator(_):
    from multifeat.eval.evaluator import AttributeEvaluator

    return AttributeEvaluator(image_size=16, width=4, max_width=8), _attr_data(val_fraction=0.25), ("train/bce",), \
        {"limit_val_batches": 1}


BUILDERS = {f.__name__: f for f in (phase1, feature_classifier, phase3, stylegan2ada, conditional_gan, attribute_evaluator)}


@pytest.fixture(scope="module")
def phase3_inputs(tmp_path_factory) -> Path:
    from multifeat.phases import FeatureClassifier

    folder = tmp_path_factory.mktemp("precision_inputs")
    quiet = dict(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                 enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    seed_everything(0, verbose=False)
    t = Trainer(**quiet)
    t.fit(tiny_phase1(num_fixed=4), datamodule=_attr_data(require={"bald": True}))
    t.save_checkpoint(str(folder / "phase1.ckpt"))
    t = Trainer(**quiet)
    t.fit(FeatureClassifier(image_size=16, width=4, max_width=8),
          datamodule=FeatureClassifierDataModule(feature="bald", image_size=16, num_samples=16, batch_size=8,
                                                 val_fraction=0.0))
    t.save_checkpoint(str(folder / "phase2.ckpt"))
    return folder


def _outputs(module: torch.nn.Module) -> torch.Tensor:
    """What the reloaded module computes: samples for generators, probabilities/logits for classifiers."""
    if hasattr(module, "sample"):
        return module.sample(4, seed=0)
    return module(torch.rand(4, 3, 16, 16) * 2 - 1)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_bf16_mixed_trains_with_finite_losses_and_checkpoints(name, tmp_path, phase3_inputs):
    seed_everything(0, verbose=False)
    module, data, loss_keys, extra = BUILDERS[name](phase3_inputs)
    watch = Watch(loss_keys)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=STEPS, save_top_k=-1)
    trainer = Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", max_steps=STEPS, logger=False,
                      callbacks=[watch, ckpt], default_root_dir=str(tmp_path), enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
                      **{"limit_val_batches": 0, **extra})
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == STEPS

    assert torch.bfloat16 in watch.dtypes, f"no layer ran in bfloat16 (saw {watch.dtypes})"
    for key, values in watch.losses.items():
        assert len(values) == STEPS, f"{key} logged {len(values)} times in {STEPS} steps"
        assert all(math.isfinite(v) for v in values), f"{key}: {values}"
    assert all(p.dtype == torch.float32 for p in module.parameters()), "mixed precision must keep float32 weights"

    files = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert len(files) == 1 and files[0].name.endswith(f"-step={STEPS}.ckpt"), files
    reloaded = load_phase_module(files[0])
    assert type(reloaded) is type(module)
    for (k, a), (_, b) in zip(module.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a.cpu(), b), k
    with torch.no_grad():
        out = _outputs(reloaded)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
