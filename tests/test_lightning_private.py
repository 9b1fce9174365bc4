"""The Lightning internals of :mod:`multifeat.utils.lightning_private` still exist and still behave as used.

A Lightning release that renames or changes one of them fails here, by name, instead of silently
changing how the GAN phases count steps or record hyper-parameters.
"""

from __future__ import annotations

import contextvars
import inspect

import lightning as L
import pytest
import torch
from helpers import quiet_trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.core.mixins import hparams_mixin
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch.utils.data import DataLoader, TensorDataset

from multifeat.utils import lightning_private as lp


def test_every_private_attribute_is_there_with_the_expected_signature():
    assert lp.check_private_api() == []


@pytest.mark.parametrize("name", lp.OPTIMIZER_STEP_CALLBACKS)
def test_lightning_optimizer_step_callbacks(name):
    opt = LightningOptimizer(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))
    fn = getattr(opt, name)
    assert callable(fn) and not inspect.signature(fn).parameters
    # LightningOptimizer.step really goes through them (that is what makes one step count)
    assert f"self.{name}()" in inspect.getsource(LightningOptimizer.step)


def test_cli_hook_and_hparams_context_exist():
    hook = getattr(LightningCLI, lp.CLI_CKPT_PATH_HOOK)
    assert list(inspect.signature(hook).parameters) == ["self"]
    assert isinstance(getattr(hparams_mixin, lp.GIVEN_HPARAMS), contextvars.ContextVar)


def test_check_reports_a_missing_attribute(monkeypatch):
    monkeypatch.delattr(LightningCLI, lp.CLI_CKPT_PATH_HOOK)
    monkeypatch.delattr(hparams_mixin, lp.GIVEN_HPARAMS)
    problems = lp.check_private_api()
    assert any(lp.CLI_CKPT_PATH_HOOK in p for p in problems) and any(lp.GIVEN_HPARAMS in p for p in problems)
    with pytest.raises(RuntimeError, match=lp.GIVEN_HPARAMS):
        with lp.own_hyperparameters():
            pass


class _Manual(L.LightningModule):
    """Two optimizer steps per batch through the strategy (uncounted), then one count."""

    def __init__(self, count: bool) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.count = count
        self.a = torch.nn.Linear(2, 1)
        self.b = torch.nn.Linear(2, 1)

    def configure_optimizers(self):
        return [torch.optim.SGD(self.a.parameters(), lr=0.1), torch.optim.SGD(self.b.parameters(), lr=0.1)]

    def training_step(self, batch, batch_idx):
        (x,) = batch
        for opt, net in zip(self.optimizers(), (self.a, self.b)):
            opt.zero_grad()
            self.manual_backward(net(x).pow(2).mean())
            self.trainer.strategy.optimizer_step(opt.optimizer, closure=lambda: None, model=self)
        if self.count:
            lp.count_optimizer_step(self.optimizers()[0])


@pytest.mark.parametrize("count", [True, False])
def test_count_optimizer_step_counts_one_global_step(count):
    data = DataLoader(TensorDataset(torch.randn(12, 2)), batch_size=4)
    trainer = quiet_trainer(-1, max_epochs=1)
    module = _Manual(count)
    before = module.a.weight.detach().clone()
    trainer.fit(module, data)
    assert trainer.global_step == (3 if count else 0)  # the strategy's steps count nothing by themselves
    assert not torch.equal(before, module.a.weight)  # ... but they did update


def test_own_hyperparameters_lets_a_nested_module_record_its_own_arguments():
    class Inner(L.LightningModule):
        def __init__(self, size: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters()

    given = getattr(hparams_mixin, lp.GIVEN_HPARAMS)
    token = given.set({"outer": 1})  # what LightningCLI sets while it builds the outer module
    try:
        assert dict(Inner(size=5).hparams) == {"outer": 1}  # the leak the context manager prevents
        with lp.own_hyperparameters():
            assert dict(Inner(size=5).hparams) == {"size": 5}
        assert given.get() == {"outer": 1}
    finally:
        given.reset(token)
