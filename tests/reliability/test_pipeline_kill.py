"""A pipeline killed with SIGKILL during phase 2 resumes there and leaves phase 1's results alone."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _tiny_pipeline_config() -> dict:
    return yaml.safe_load((REPO / "tests" / "configs" / "tiny_pipeline.yaml").read_text())


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_pipeline_killed_in_phase2_resumes_without_touching_phase1(tmp_path):
    cfg = _tiny_pipeline_config()
    cfg["phase2"]["trainer"]["max_epochs"] = 40  # long enough to be killed in the middle
    cfg["phase2"]["callbacks"] = {"checkpoint": {"every_n_epochs": 1}}
    cfg["eval"]["enabled"] = False
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "multifeat.cli", "pipeline", "--config", str(cfg_path), "--run-dir", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (run / "phase2" / "checkpoints" / "last.ckpt").is_file():
            assert proc.poll() is None, "the pipeline ended before phase 2 wrote a checkpoint"
            assert time.time() < deadline, "phase 2 wrote no checkpoint in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert (run / "phase1" / "done.json").is_file() and not (run / "phase2" / "done.json").exists()
    phase1_before = _hashes(run / "phase1")

    cfg["phase2"]["trainer"]["max_epochs"] = 3  # finish quickly on the second run
    cfg_path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    assert "phase1" in out
    assert _hashes(run / "phase1") == phase1_before  # finished results are never rewritten
    for phase in ("phase2", "phase3"):
        assert (run / phase / "done.json").is_file() and (run / phase / "checkpoints" / "final.ckpt").is_file()
