"""Every single-phase config of ``experiments/`` trains from the command line (slow: real fits).

* The README's three commands, ``lightning fit --config experiments/phase{1,2,3}.yaml``, run one
  after the other through the installed console script, from the repository root (every output path
  moved under tmp_path on the command line) and from another working directory with absolute config
  paths; phase 3 must get past its snapshot epoch.
* Every config with a top-level ``model.class_path`` (the LightningCLI configs) runs a few steps at
  tiny size through ``multifeat fit`` and writes into its own run folder: ``config.yaml`` and
  ``checkpoints/last.ckpt`` under the folder its header documents. Configs without ``model.class_path``
  are read by ``multifeat pipeline`` / ``multifeat bench`` or are overlays (experiments/slurm): their
  own tests cover them (tests/commands/test_pipeline.py, the bench tests, tests/ddp).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"
sys.path.insert(0, str(REPO / "tests" / "data"))
from celeba_fixtures import make_celeba  # noqa: E402


def console(name: str) -> list[str]:
    """The console script next to this interpreter, or ``python -m multifeat.cli`` when it is missing."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.is_file() else [sys.executable, "-m", "multifeat.cli"]


def run_cli(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["WANDB_MODE"] = "offline"
    env.pop("WANDB_SERVICE", None)
    r = subprocess.run([*console(name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{name} {' '.join(args)} (cwd {cwd}) exited {r.returncode}:\n{r.stderr[-4000:]}"
    return r


def load(cfg: Path) -> dict:
    return yaml.safe_load(cfg.read_text())


def is_lightning_config(cfg: Path) -> bool:
    """The rule for which configs `multifeat fit` runs: a top-level ``model`` with a ``class_path``."""
    data = load(cfg)
    return isinstance(data, dict) and isinstance(data.get("model"), dict) and "class_path" in data["model"]


def run_folder(cfg: dict) -> str:
    return cfg["trainer"]["default_root_dir"]


def _move(value, root: Path):
    """Paths of the config (relative, under runs/) moved under ``root``; other values unchanged."""
    if isinstance(value, str) and value.startswith("runs/"):
        return str(root / value)
    if isinstance(value, dict):
        return {k: _move(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_move(v, root) for v in value]
    return value


def relocation_args(cfg_path: Path, root: Path) -> list[str]:
    """Command-line overrides that send every output (and input) path of a config under ``root``."""
    cfg = load(cfg_path)
    t = cfg["trainer"]
    args = ["--trainer.default_root_dir", str(root / t["default_root_dir"])]
    if isinstance(t.get("logger"), dict):
        args += ["--trainer.logger.init_args.save_dir", str(root / t["logger"]["init_args"]["save_dir"])]
    args += ["--trainer.callbacks", json.dumps(_move(t.get("callbacks") or [], root))]
    for section in ("model", "data"):
        for key, value in (cfg[section].get("init_args") or {}).items():
            if isinstance(value, str) and value.startswith("runs/"):
                args += [f"--{section}.init_args.{key}", str(root / value)]
    return args


# tiny sizes, per config file name (same keys for the synthetic and the CelebA version)
TINY = {
    "phase1.yaml": ["--trainer.max_steps", "6", "--data.init_args.batch_size", "8"],
    "phase2.yaml": ["--trainer.max_epochs", "1", "--data.init_args.epoch_size", "32", "--data.init_args.batch_size", "8"],
    "phase3.yaml": ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2", "--model.init_args.snapshot_epoch", "1",
                    "--data.init_args.batch_size", "4", "--model.init_args.num_fixed", "4"],
    "cgan.yaml": ["--trainer.max_steps", "3", "--data.init_args.batch_size", "8"],
    "evaluator.yaml": ["--trainer.max_steps", "3", "--trainer.val_check_interval", "2", "--data.init_args.batch_size", "8",
                       "--model.init_args.image_size", "16", "--data.init_args.image_size", "16"],
    "stylegan2.yaml": ["--trainer.max_steps", "3", "--data.init_args.batch_size", "4", "--model.init_args.num_fixed", "4",
                       "--model.init_args.channel_base", "256", "--model.init_args.channel_max", "32",
                       "--model.init_args.z_dim", "16", "--model.init_args.w_dim", "16"],
    "stylegan2_synth.yaml": ["--trainer.max_steps", "3", "--data.init_args.batch_size", "4", "--model.init_args.num_fixed", "4",
                             "--model.init_args.channel_base", "256", "--model.init_args.channel_max", "32",
                             "--model.init_args.z_dim", "16", "--model.init_args.w_dim", "16"],
}
SYNTHETIC = {  # SyntheticFaces: few faces, 16 px
    "phase1.yaml": ["--data.init_args.num_samples", "64", "--model.init_args.image_size", "16", "--data.init_args.image_size", "16"],
    "phase2.yaml": ["--data.init_args.num_samples", "64", "--model.init_args.image_size", "16", "--data.init_args.image_size", "16"],
    "phase3.yaml": ["--data.init_args.num_samples", "64", "--data.init_args.image_size", "16"],
    "cgan.yaml": ["--data.init_args.num_samples", "64", "--model.init_args.image_size", "16", "--data.init_args.image_size", "16"],
    # the immature-generator bank from generators sampled after 1 and 2 batches (the recipe's trains for hundreds)
    "evaluator.yaml": ["--data.init_args.num_samples", "64", "--model.init_args.immature_steps", "[1, 2]"],
    "stylegan2.yaml": ["--data.init_args.num_samples", "32", "--model.init_args.image_size", "16", "--data.init_args.image_size", "16"],
    "stylegan2_synth.yaml": ["--data.init_args.num_samples", "32", "--model.init_args.image_size", "16", "--data.init_args.image_size", "16"],
}
CELEBA = {  # the generated CelebA-like tree: CPU, float32, no loader workers, 16 px
    "phase1.yaml": ["--model.init_args.image_size", "16", "--data.init_args.image_size", "16", "--model.init_args.num_fixed", "4",
                    "--model.init_args.g_width", "8", "--model.init_args.d_width", "8"],
    "phase2.yaml": ["--model.init_args.image_size", "16", "--data.init_args.image_size", "16"],
    "phase3.yaml": ["--data.init_args.image_size", "16", "--model.init_args.add_blocks", "{16: 1}"],  # G1 has no 32 px stage
    "stylegan2.yaml": ["--model.init_args.image_size", "16", "--data.init_args.image_size", "16", "--model.init_args.num_fp16_res", "0"],
    "evaluator.yaml": [],  # TINY already sets 16 px
}
CPU = ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--data.init_args.num_workers", "0",
       "--data.init_args.pin_memory", "false"]


def assert_snapshot_taken(ckpt: Path, epoch: int) -> None:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert bool(state["snapshot_taken"]), f"{ckpt}: phase 3 ended without the snapshot"
    assert int(state["snapshot_at_epoch"]) == epoch


# -------------------------------------------------------------------------------------------------
def test_every_lightning_config_has_its_own_run_folder_and_documents_it():
    """Static: run folder = logger save_dir = parent of checkpoints/samples, unique, named in the header."""
    seen = {}
    for cfg_path in sorted(EXPERIMENTS.rglob("*.yaml")):
        if not is_lightning_config(cfg_path):
            continue
        cfg, text = load(cfg_path), cfg_path.read_text()
        root = run_folder(cfg)
        name = cfg_path.relative_to(EXPERIMENTS).with_suffix("").as_posix()
        assert root == f"runs/{name}", f"{cfg_path}: default_root_dir {root!r}, expected runs/{name}"
        assert root not in seen, f"{cfg_path} and {seen.get(root)} share {root}"
        seen[root] = cfg_path
        t = cfg["trainer"]
        assert t["logger"]["init_args"]["save_dir"] == root, cfg_path
        for cb in t["callbacks"]:
            args = cb.get("init_args") or {}
            if cb["class_path"].endswith("ModelCheckpoint"):
                assert args.get("dirpath") == f"{root}/checkpoints" and args.get("save_last") is True, cfg_path
            if cb["class_path"].endswith("SampleGrid"):  # unset: the logger's save_dir (= root) / samples
                assert args.get("dirpath") in (None, f"{root}/samples"), cfg_path
        assert f"Writes {root}/" in text and "checkpoints/last.ckpt" in text, f"{cfg_path}: the header must say where it writes"
    assert {"runs/phase1", "runs/cgan", "runs/evaluator", "runs/stylegan2", "runs/celeba/stylegan2"} <= set(seen)
    assert {f"runs/celeba_cpu/{n}" for n in ("evaluator", "phase1", "phase2", "phase3", "stylegan2")} <= set(seen)


@pytest.mark.slow
def test_readme_commands_from_the_repository_root(tmp_path):
    """`lightning fit --config experiments/phaseN.yaml` x3 from the repo root, outputs moved under tmp_path."""
    for n in (1, 2, 3):
        rel = Path("experiments") / f"phase{n}.yaml"
        run_cli("lightning", ["fit", "--config", rel.as_posix(), *relocation_args(REPO / rel, tmp_path),
                              *TINY[rel.name], *SYNTHETIC[rel.name]], cwd=REPO)
        assert (tmp_path / f"runs/phase{n}/checkpoints/last.ckpt").is_file()
        assert (tmp_path / f"runs/phase{n}/config.yaml").is_file()
    assert_snapshot_taken(tmp_path / "runs/phase3/checkpoints/last.ckpt", epoch=1)
    assert any((tmp_path / "runs/phase1/negatives").iterdir())


@pytest.mark.slow
def test_readme_commands_from_another_directory_with_absolute_paths(tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    for n in (1, 2, 3):
        cfg = EXPERIMENTS / f"phase{n}.yaml"
        r = run_cli("lightning", ["fit", "--config", str(cfg), *TINY[cfg.name], *SYNTHETIC[cfg.name]], cwd=work)
        assert "ScheduleWarning" not in r.stderr
    assert_snapshot_taken(work / "runs/phase3/checkpoints/last.ckpt", epoch=1)
    assert sorted(p.name for p in (work / "runs").iterdir()) == ["phase1", "phase2", "phase3"]


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["experiments", "experiments/celeba", "experiments/celeba_cpu"])
def test_every_config_fits_into_its_own_run_folder(tmp_path, folder, monkeypatch):
    """Every LightningCLI config of ``folder`` (name order: phase 1 before 2 before 3) in one working dir."""
    monkeypatch.setenv("MULTIFEAT_CACHE", str(tmp_path / "cache"))  # the evaluator's immature-generator bank
    configs = [p for p in sorted((REPO / folder).glob("*.yaml")) if is_lightning_config(p)]
    assert configs
    extra = SYNTHETIC
    if folder.endswith(("celeba", "celeba_cpu")):
        make_celeba(tmp_path / "data", n=480, size=(16, 20))  # `root: data` of the CelebA configs
        extra = CELEBA
    expected = set()
    for cfg_path in configs:
        cfg = load(cfg_path)
        args = ["fit", "--config", str(cfg_path), *TINY[cfg_path.name], *extra[cfg_path.name]]
        if extra is CELEBA:
            args += CPU + ["--data.init_args.batch_size", "2"]
        run_cli("multifeat", args, cwd=tmp_path)
        root = tmp_path / run_folder(cfg)
        expected.add(run_folder(cfg).split("/")[1])
        assert (root / "config.yaml").is_file(), f"{cfg_path.name}: no {root}/config.yaml"
        assert (root / "checkpoints" / "last.ckpt").is_file(), f"{cfg_path.name}: no {root}/checkpoints/last.ckpt"
        assert load(root / "config.yaml")["model"]["class_path"] == cfg["model"]["class_path"]
        if cfg_path.name == "phase3.yaml":
            assert_snapshot_taken(root / "checkpoints" / "last.ckpt", epoch=1)
    # nothing outside the run folders: no runs/config.yaml, no runs/multifeat/<id>/checkpoints
    assert {p.name for p in (tmp_path / "runs").iterdir()} == expected
