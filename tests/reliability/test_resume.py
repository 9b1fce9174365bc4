"""Exact resume: a training process really killed with SIGKILL (between steps, or while a checkpoint
is being written) and resumed from ``last`` ends with the same weights, bit for bit, as a run that
was never interrupted. Phase 1, Phase 2 (feature classifier, weighted sampler), Phase 3 before and
after the snapshot, StyleGAN2-ADA (ADA p, EMA, path-length mean, images seen are buffers).

Data: 48 synthetic faces, batches of 8 (6 batches per epoch), shuffled by the data modules'
generators; 15 steps; a checkpoint every 4 steps (mid-epoch: steps 4, 8) unless noted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("resume_worker.py")
REPO = Path(__file__).resolve().parents[2]
STEPS = ["--max-steps", "15", "--every", "4"]


def _worker(*args: str, expect_kill: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, str(WORKER), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    if expect_kill:
        assert proc.returncode == -signal.SIGKILL, f"expected the worker to be killed\n{proc.stderr[-3000:]}"
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _final(root: Path) -> dict:
    return torch.load(root / "final.pt", weights_only=True)


def _assert_identical(ref: dict, got: dict) -> None:
    assert ref.keys() == got.keys()
    differ = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not differ, f"{len(differ)} of {len(ref)} tensors differ after resume, e.g. {differ[:5]}"


def _ckpt_step(root: Path) -> int:
    return int(torch.load(root / "ckpt" / "last.ckpt", weights_only=True, map_location="cpu")["global_step"])


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> Path:
    """Uninterrupted runs of all four phases (one process)."""
    root = tmp_path_factory.mktemp("references")
    _worker("references", str(root), *STEPS)
    return root


def _kill_and_resume(references: Path, tmp: Path, phase: str, kill_step: int, expect_ckpt: int, *extra: str) -> Path:
    run = tmp / phase
    _worker(phase, str(run), *STEPS, "--kill-step", str(kill_step), *extra, expect_kill=True)
    assert _ckpt_step(run) == expect_ckpt  # the resume really starts from the middle
    _worker(phase, str(run), *STEPS, "--resume", *[e for e in extra if e != "--in-write"])
    _assert_identical(_final(references / phase), _final(run))
    return run


def test_phase1_killed_while_writing_a_checkpoint_resumes_exactly(references, tmp_path):
    run = tmp_path / "phase1"
    # killed inside the write of the step-12 checkpoint: the complete new bytes sit in a temporary
    # file beside last.ckpt, the rename has not happened
    _worker("phase1", str(run), *STEPS, "--kill-step", "9", "--in-write", expect_kill=True)
    ckpt = run / "ckpt" / "last.ckpt"
    assert _ckpt_step(run) == 8, "the previous checkpoint must survive a kill during the write"
    strays = [p.name for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]
    assert strays, "the kill should have happened inside the write (a temporary file left behind)"
    before = _sha(ckpt)
    # a resume without the random states diverges (the comparison below can fail) ...
    control = tmp_path / "control"
    shutil.copytree(run, control)
    _worker("phase1", str(control), *STEPS, "--resume", "--no-rng")
    ref = _final(references / "phase1")
    got = _final(control)
    assert any(not torch.equal(ref[k], got[k]) for k in ref)
    # ... with them (mid-epoch checkpoint: step 8 is batch 3 of epoch 1) it is exact
    assert _sha(ckpt) == before
    _worker("phase1", str(run), *STEPS, "--resume")
    _assert_identical(ref, _final(run))


def test_phase2_feature_classifier_resumes_exactly(references, tmp_path):
    _kill_and_resume(references, tmp_path, "phase2", 10, 8)


def test_phase3_resumes_exactly_before_and_after_the_snapshot(references, tmp_path):
    g = ["--g1", str(references / "phase1" / "ckpt" / "last.ckpt"), "--d2", str(references / "phase2" / "ckpt" / "last.ckpt")]
    # snapshot at the start of epoch 1 (step 6): a mid-epoch checkpoint before it ...
    run = _kill_and_resume(references, tmp_path / "before", "phase3", 5, 4, *g)
    # ... and the end-of-epoch-1 checkpoint (step 12), after it
    run = _kill_and_resume(references, tmp_path / "after", "phase3", 13, 12, *g)
    ck = torch.load(run / "ckpt" / "last.ckpt", weights_only=True)
    assert bool(ck["state_dict"]["snapshot_taken"])


def test_stylegan2ada_resumes_exactly(references, tmp_path):
    run = _kill_and_resume(references, tmp_path, "stylegan2", 10, 8)
    got = _final(run)
    # the training state that lives in buffers came back too
    assert int(got["images_seen"]) == 15 * 8
    assert abs(float(got["augment_pipe.p"]) - 0.3) > 1e-6, "ADA p should have moved (and was compared above)"
    assert "pl_mean" in got and "G_ema.mapping.w_avg" in got
