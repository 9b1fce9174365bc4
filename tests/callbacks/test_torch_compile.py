"""TorchCompile compiles the named sub-modules in place; names the module lacks are errors."""

import lightning as L
import pytest
import torch
from helpers import tiny_phase1

from multifeat.callbacks import TorchCompile
from multifeat.errors import ConfigError


def tiny():
    return tiny_phase1()


def test_compiles_generator_and_discriminator_in_place_keeping_state_dict_keys(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append((type(self).__name__, kw)))
    model = tiny()
    keys = list(model.state_dict())
    cb = TorchCompile(mode="reduce-overhead")
    cb.setup(L.Trainer(logger=False), model, "fit")
    cb.setup(L.Trainer(logger=False), model, "fit")  # a second setup does not compile twice
    assert [c[0] for c in calls] == ["DCGANGenerator", "DCGANDiscriminator"]
    assert calls[0][1] == {"mode": "reduce-overhead", "dynamic": None}
    assert list(model.state_dict()) == keys


def test_unknown_module_name_is_a_clear_error():
    with pytest.raises(ConfigError, match="has no sub-module 'mapping'; it has .*discriminator.*generator"):
        TorchCompile(modules=["mapping"]).setup(L.Trainer(logger=False), tiny(), "fit")


@pytest.mark.slow
def test_a_compiled_fit_runs_and_matches_eager_outputs():
    torch.manual_seed(0)
    model = tiny()
    z = torch.randn(2, 8)
    model.eval()
    eager = model.generator(z)
    TorchCompile(modules=["generator"]).setup(L.Trainer(logger=False), model, "fit")
    torch.testing.assert_close(model.generator(z), eager, atol=1e-5, rtol=1e-5)
