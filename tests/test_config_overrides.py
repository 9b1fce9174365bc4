"""--set dotted.key=value overrides (pipeline: creates sections; bench: known keys only)."""

import pytest

from multifeat.errors import ConfigError
from multifeat.utils.config import set_dotted


def test_create_mode_makes_sections_and_parses_yaml():
    cfg = {"phase1": {"trainer": {"max_epochs": 16}}}
    set_dotted(cfg, "phase1.trainer.max_epochs=2", create=True, example="x=1")
    set_dotted(cfg, "phase3.model.alpha=[1, 1, 0.2]", create=True, example="x=1")
    set_dotted(cfg, "logger=csv", create=True, example="x=1")
    assert cfg == {"phase1": {"trainer": {"max_epochs": 2}}, "phase3": {"model": {"alpha": [1, 1, 0.2]}}, "logger": "csv"}


def test_strict_mode_refuses_unknown_keys_and_names_the_valid_ones():
    cfg = {"gan": {"steps": 300, "batch_size": 64}}
    set_dotted(cfg, "gan.steps=100", create=False, example="gan.steps=100")
    assert cfg["gan"]["steps"] == 100
    with pytest.raises(ConfigError, match="unknown key 'step'; expected one of steps, batch_size"):
        set_dotted(cfg, "gan.step=5", create=False, example="gan.steps=100")
    with pytest.raises(ConfigError, match="'data' is not a section of the benchmark config"):
        set_dotted(cfg, "data.root=/x", create=False, example="gan.steps=100", what="benchmark config")


@pytest.mark.parametrize("bad", ["phase1.trainer", "=3", "a.b=[1,"])
def test_malformed_items_are_clear_errors(bad):
    with pytest.raises(ConfigError, match="--set"):
        set_dotted({}, bad, create=True, example="phase1.trainer.max_epochs=2")


def test_a_scalar_in_the_path_is_not_a_section():
    with pytest.raises(ConfigError, match="'logger' is not a section"):
        set_dotted({"logger": "csv"}, "logger.kind=x", create=True, example="x=1")
