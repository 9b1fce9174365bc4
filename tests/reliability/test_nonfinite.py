"""The non-finite guard: a NaN loss at step k stops ``multifeat fit`` with a message naming the phase,
the step and the loss term, a non-zero exit, and ``last.ckpt`` from before byte for byte unchanged."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from multifeat.phases import Phase1GAN

REPO = Path(__file__).resolve().parents[2]


class NaNAtStep(Phase1GAN):
    """Phase1GAN whose real images become NaN from global step ``nan_step`` on (so loss_d is NaN)."""

    def __init__(self, nan_step: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_step = nan_step

    def training_step(self, batch, batch_idx):
        if self.global_step >= self.nan_step:
            batch = {**batch, "image": torch.full_like(batch["image"], float("nan"))}
        return super().training_step(batch, batch_idx)


def _config(tmp_path: Path, nan_step: int | None, max_steps: int) -> Path:
    model = {"class_path": "multifeat.phases.Phase1GAN" if nan_step is None else "test_nonfinite.NaNAtStep",
             "init_args": {"image_size": 16, "z_dim": 8, "g_width": 4, "d_width": 4, "max_width": 16}}
    if nan_step is not None:
        model["init_args"]["nan_step"] = nan_step
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_steps": max_steps, "accelerator": "cpu", "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "limit_val_batches": 0, "default_root_dir": str(tmp_path),
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True,
                                                 "save_top_k": 0, "every_n_train_steps": 2}}]},
        "model": model,
        "data": {"class_path": "multifeat.data.AttributeDataModule",
                 "init_args": {"source": "synthetic", "image_size": 16, "num_samples": 32, "batch_size": 4,
                               "val_fraction": 0.0}},
    }
    p = tmp_path / f"cfg_{nan_step}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.slow
def test_nan_loss_stops_the_cli_and_keeps_the_last_checkpoint(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{Path(__file__).parent}"}

    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "multifeat.cli", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=180)

    good = cli("fit", "--config", str(_config(tmp_path, None, 4)))
    assert good.returncode == 0, good.stderr[-2000:]
    last = tmp_path / "ckpt" / "last.ckpt"
    before = hashlib.sha256(last.read_bytes()).hexdigest()
    assert torch.load(last, weights_only=True)["global_step"] == 4

    # resume with a model that turns NaN at step 5: checkpoints would be written at step 6
    bad = cli("fit", "--config", str(_config(tmp_path, 5, 8)), "--ckpt_path", str(last))
    assert bad.returncode == 2, bad.stderr[-3000:]
    assert "Traceback" not in bad.stderr, bad.stderr[-3000:]
    msg = bad.stderr
    assert "phase1" in msg and "loss_d" in msg and "global step 5" in msg and "nan" in msg.lower()
    assert hashlib.sha256(last.read_bytes()).hexdigest() == before
