"""experiments/slurm: the sbatch example's `multifeat fit` line resolves to the intended config."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SBATCH = REPO / "experiments" / "slurm" / "phase1.sbatch"


def _srun_args() -> list[str]:
    text = SBATCH.read_text()
    m = re.search(r"^srun multifeat (fit .*?)(?<!\\)\n", text, flags=re.S | re.M)
    assert m, "no `srun multifeat fit ...` line"
    line = m.group(1).replace("\\\n", " ")
    line = line.replace('"${DATA_ROOT}"', "/data").replace('"slurm-${SLURM_JOB_ID:-local}"', "slurm-42")
    return shlex.split(line)


def test_sbatch_nodes_and_tasks_match_the_trainer_settings():
    text = SBATCH.read_text()
    nodes = int(re.search(r"^#SBATCH --nodes=(\d+)", text, re.M).group(1))
    tasks = int(re.search(r"^#SBATCH --ntasks-per-node=(\d+)", text, re.M).group(1))
    gpus = int(re.search(r"^#SBATCH --gres=gpu:(\d+)", text, re.M).group(1))
    overlay = yaml.safe_load((REPO / "experiments" / "slurm" / "phase1_8gpu.yaml").read_text())["trainer"]
    assert (overlay["num_nodes"], overlay["devices"]) == (nodes, tasks) and gpus == tasks
    assert overlay["strategy"] == "ddp_find_unused_parameters_true"


@pytest.mark.slow
def test_sbatch_command_line_parses_to_the_scaled_config():
    args = _srun_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "multifeat.cli", *args, "--print_config"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load(proc.stdout)
    t = cfg["trainer"]
    assert (t["num_nodes"], int(t["devices"]), t["strategy"], t["precision"]) == (2, 4, "ddp_find_unused_parameters_true",
                                                                                  "bf16-mixed")
    assert t["logger"]["init_args"]["group"] == "slurm-42" and t["logger"]["init_args"]["job_type"] == "phase1"
    bank = next(c for c in t["callbacks"] if c["class_path"].endswith("NegativeBank"))["init_args"]
    one_gpu = yaml.safe_load((REPO / "experiments" / "celeba" / "phase1.yaml").read_text())
    assert t["max_steps"] * 8 == one_gpu["trainer"]["max_steps"]
    one_gpu_bank = next(c for c in one_gpu["trainer"]["callbacks"] if c["class_path"].endswith("NegativeBank"))["init_args"]
    assert bank["first_steps"] * 8 == one_gpu_bank["first_steps"] and bank["max_images"] == one_gpu_bank["max_images"]
    assert cfg["data"]["init_args"]["root"] == "/data"
