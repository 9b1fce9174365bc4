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


# ------------------------------------------------------------------------------------- help
def test_model_help_lists_the_package_classes_not_every_torch_module(capsys):
    code = cli.main(["fit", "--model.help", "Phase1GAN"])
    out = capsys.readouterr().out
    assert code == 0
    for arg in ("--model.g_width", "--model.d_width", "--model.ema_decay", "--model.generator"):
        assert arg in out
    flat = " ".join(out.split())  # the help is wrapped to the terminal width
    assert "multifeat.nets.dcgan.DCGANGenerator" in flat  # this package's networks stay listed
    assert "torch.nn.Linear" not in flat and "torchvision.models" not in flat
    assert "more from" in flat and "works by full class_path" in flat
    assert len(out.splitlines()) < 250  # was ~1,450 lines


def test_shorten_known_subclasses_counts_long_framework_lists_only():
    many = [f"torch.nn.M{i}" for i in range(45)]
    text = "a net (type: Module | null, default: null, known subclasses: " + ", ".join(
        ["multifeat.nets.A", *many[:20], "mypkg.B", *many[20:]]) + ")"
    out = cli.shorten_known_subclasses(text)
    assert out == ("a net (type: Module | null, default: null, known subclasses: multifeat.nets.A, mypkg.B; "
                   "45 more from torch not listed, any of them (or a class of yours) works by full class_path)")
    short = "x (type: Logger, known subclasses: lightning.pytorch.loggers.CSVLogger, multifeat.loggers.WandbLogger)"
    assert cli.shorten_known_subclasses(short) == short  # few framework classes: all stay listed
    assert cli.shorten_known_subclasses("no list here (type: int)") == "no list here (type: int)"


def test_user_classes_still_work_by_class_path(tmp_path, monkeypatch, capsys):
    (tmp_path / "usermods.py").write_text(
        "from lightning.pytorch import LightningModule\n\n"
        "class TinyUserModule(LightningModule):\n"
        "    def __init__(self, width: int = 3, note: str = 'x'):\n"
        "        super().__init__()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["fit", "--model.help", "usermods.TinyUserModule"]) == 0
    out = capsys.readouterr().out
    assert "--model.width" in out and "--model.note" in out
    assert cli.main(["fit", "--model", "usermods.TinyUserModule", "--model.width", "5",
                     "--data", "multifeat.data.AttributeDataModule", "--print_config"]) == 0
    out = capsys.readouterr().out
    assert "class_path: usermods.TinyUserModule" in out and "width: 5" in out


# ------------------------------------------------------------------------------------- attributes
@pytest.mark.parametrize("cfg, attrs", [("experiments/cgan.yaml", ["bald", "beard"]),
                                        ("experiments/evaluator.yaml", ["bald", "beard", "eyeglasses", "smiling"])])
def test_data_attributes_follow_the_model_when_unset(cfg, attrs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = cli.build_cli(["--config", str(REPO / cfg), "--data.init_args.num_samples", "64",
                       "--trainer.logger", "false"], run=False)
    assert list(c.model.hparams_initial["attributes"]) == attrs
    assert c.datamodule.hparams_initial["attributes"] == c.model.hparams_initial["attributes"]
    assert list(c.datamodule.attribute_names) == attrs


def test_conflicting_model_and_data_hparams_are_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["fit", "--config", str(REPO / "experiments/cgan.yaml"), "--data.init_args.num_samples", "64",
                     "--data.init_args.attributes", "[bald, beard, smiling]",
                     "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path / "csv")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # one line, no traceback (Lightning's RuntimeError is not reached)
    assert code == 2
    assert "error: model.init_args.attributes=['bald', 'beard']" in last
    assert "data.init_args.attributes=['bald', 'beard', 'smiling']" in last
    assert "Error while merging hparams" not in err
    assert not (tmp_path / "runs" / "cgan" / "checkpoints").exists()  # stopped before training


def test_a_closed_output_pipe_ends_the_command_quietly():
    """`multifeat ... | head` closes the pipe early: exit status 141, no traceback."""
    code = ("import sys\nfrom multifeat.cli import _run_reporting\n"
            "def run():\n    for i in range(200000):\n        print('line', i)\n    return 0\n"
            "sys.exit(_run_reporting(run, 'multifeat demo'))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(100)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
