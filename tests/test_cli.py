"""The command line: help, package commands, print_config of every shipped config."""

import subprocess
import sys
from pathlib import Path

import pytest

from multifeat import cli

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "experiments").rglob("*.yaml"))


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "multifeat.cli", *args], cwd=kw.pop("cwd", REPO), capture_output=True, text=True, timeout=300, **kw)


def test_help_lists_lightning_and_package_commands():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    for word in ("fit", "validate", "test", "predict", *cli.COMMANDS):
        assert word in r.stdout


def test_console_scripts_are_declared():
    text = (REPO / "pyproject.toml").read_text()
    assert 'multifeat = "multifeat.cli:main"' in text
    assert 'lightning = "multifeat.cli:main"' in text


def test_every_package_command_is_importable_and_has_main():
    import importlib

    for name, (module, _) in cli.COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(mod.main), name


def test_unknown_subcommand_fails_with_usage():
    r = run("fitt")
    assert r.returncode != 0
    assert "fitt" in r.stderr


def _print_config_is_handled_by_pipeline(cfg: str) -> bool:
    return "pipeline" in Path(cfg).name or Path(cfg).name.startswith("method_") or Path(cfg).name.startswith("bench")


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if not _print_config_is_handled_by_pipeline(c)])
def test_print_config_of_every_lightning_config(cfg, monkeypatch, capsys):
    code = cli.main(["fit", "--config", cfg, "--print_config"])
    out = capsys.readouterr().out
    assert code == 0
    assert "model:" in out and "class_path:" in out and "trainer:" in out


def test_wandb_mode_defaults_offline_without_credentials(monkeypatch, tmp_path):
    from multifeat.loggers import wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_mode() == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password x\n")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert wandb_mode() == "offline"
