"""SIGTERM / SIGINT during training: a checkpoint at the signal, one line with the resume command,
exit status 143 / 130, and a resume that continues from that step (real signals to subprocesses)."""

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}


def _loops(ckpt: Path) -> tuple[int, int]:
    """(global step, training batches done) recorded in a checkpoint."""
    c = torch.load(ckpt, map_location="cpu", weights_only=False)
    progress = c["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]
    return int(c["global_step"]), int(progress["ready"])


class _Reader:
    """Collect a subprocess's output lines in a thread (so the test can wait for one)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._run, args=(proc.stdout,), daemon=True)
        self.thread.start()

    def _run(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, pattern: str, proc: subprocess.Popen, timeout: float = 240) -> re.Match:
        deadline = time.time() + timeout
        while True:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            assert proc.poll() is None, "the process ended first:\n" + "".join(self.lines)[-3000:]
            assert time.time() < deadline, f"no line matching {pattern!r} in time:\n" + "".join(self.lines)[-3000:]
            time.sleep(0.02)

    def wait_for_file(self, path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while not path.is_file():  # training is under way
            assert proc.poll() is None, "".join(self.lines)[-3000:]
            assert time.time() < deadline, f"no {path.name} in time"
            time.sleep(0.02)


def _interrupt(proc: subprocess.Popen, reader: _Reader, sig: int, wait_first, timeout: float = 120) -> tuple[int, str]:
    """Run ``wait_first()`` (it waits until the process has made progress), send ``sig``, wait for the exit;
    kill the process whatever happens. Returns the exit code and everything it printed."""
    try:
        wait_first()
        proc.send_signal(sig)
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.thread.join(timeout=10)
    return code, "".join(reader.lines)


@pytest.mark.slow
def test_sigterm_in_phase3_checkpoints_exits_143_and_resumes_from_that_step(tmp_path):
    cfg = yaml.safe_load((REPO / "tests" / "configs" / "tiny_pipeline.yaml").read_text())
    cfg["phase3"]["trainer"]["max_epochs"] = 300  # far longer than the test waits: the signal comes mid-phase
    cfg["phase3"]["data"]["batch_size"] = 4  # 4 batches per epoch, so the signal usually lands mid-epoch
    cfg["trainer"]["enable_progress_bar"] = True
    cfg["eval"]["enabled"] = False
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    args = ["pipeline", "--config", str(cfg_path), "--run-dir", str(run), "--progress-every", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "multifeat.cli", *args], cwd=tmp_path, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    reader = _Reader(proc)
    code, out = _interrupt(proc, reader, signal.SIGTERM, lambda: reader.wait_for(r"^phase3: batch 6/", proc))
    assert code == 143, out[-3000:]
    lines = [ln for ln in out.splitlines() if "interrupted by SIGTERM" in ln]
    assert len(lines) == 1, out[-3000:]
    m = re.search(r"phase3 interrupted by SIGTERM at step (\d+) \(epoch (\d+)\); checkpoint (\S+); resume with: (.+)$", lines[0])
    assert m, lines[0]
    step, ckpt, command = int(m.group(1)), Path(m.group(3)), m.group(4)
    assert ckpt == run / "phase3" / "checkpoints" / "last.ckpt"
    assert shlex.split(command) == ["multifeat", *args]
    saved_step, batches = _loops(ckpt)
    assert saved_step == step and batches >= 6
    assert not (run / "phase3" / "done.json").exists()  # not reported as finished

    # resume with the printed command (fewer epochs so it ends soon): the first batch trained is the next one
    cfg["phase3"]["trainer"]["max_epochs"] = batches // 4 + 2
    cfg_path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "multifeat.cli", *shlex.split(command)[1:]], cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert f"phase3: resuming from {ckpt}" in r.stdout
    first = re.search(r"^phase3: batch (\d+)/(\d+)", r.stdout, re.M)
    assert first and int(first.group(1)) == batches + 1, r.stdout
    total = (batches // 4 + 2) * 4
    final_step, final_batches = _loops(run / "phase3" / "checkpoints" / "final.ckpt")
    assert final_batches == total
    assert final_step * batches == saved_step * total  # the same optimiser steps per batch before and after


FIT_CONFIG = {
    "seed_everything": 0,
    "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 100000, "logger": False, "enable_progress_bar": False,
                "enable_model_summary": False, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                               "init_args": {"dirpath": "ckpt", "save_last": True, "save_top_k": 0,
                                             "every_n_train_steps": 5}}]},
    "model": {"class_path": "multifeat.eval.evaluator.AttributeEvaluator",
              "init_args": {"image_size": 16, "width": 4, "max_width": 8}},
    "data": {"class_path": "multifeat.data.AttributeDataModule",
             "init_args": {"source": "synthetic", "image_size": 16, "num_samples": 48, "batch_size": 8,
                           "val_fraction": 0.0, "synthetic": {"cache": True}}},
}


@pytest.mark.slow
def test_sigint_during_multifeat_fit_saves_exits_130_and_resumes_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "fit.yaml").write_text(yaml.safe_dump(FIT_CONFIG))
    cmd = [sys.executable, "-m", "multifeat.cli", "fit", "--config", "fit.yaml"]
    proc = subprocess.Popen(cmd, cwd=a, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    reader = _Reader(proc)
    code, out = _interrupt(proc, reader, signal.SIGINT, lambda: reader.wait_for_file(a / "ckpt" / "last.ckpt", proc))
    assert code == 130, out[-3000:]
    m = re.search(r"training interrupted by SIGINT at step (\d+) \(epoch \d+\); checkpoint (\S+); resume with: (.+)", out)
    assert m, out[-3000:]
    step, command = int(m.group(1)), shlex.split(m.group(3))
    assert Path(m.group(2)).resolve() == (a / "ckpt" / "last.ckpt").resolve()
    assert _loops(a / "ckpt" / "last.ckpt")[0] == step >= 5
    assert command[:4] == ["multifeat", "fit", "--config", "fit.yaml"] and command[-2:] == ["--ckpt_path", m.group(2)]

    # the printed command resumes; it ends at the same weights as a run that was never interrupted
    end = (step // 5 + 2) * 5
    r = subprocess.run([sys.executable, "-m", "multifeat.cli", *command[1:], "--trainer.max_steps", str(end)], cwd=a,
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r = subprocess.run([*cmd, "--trainer.max_steps", str(end)], cwd=b, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    ca = torch.load(a / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    cb = torch.load(b / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ca["global_step"] == cb["global_step"] == end
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for k in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), k


# ---------------------------------------------------------------------------------------------- in process
def test_signal_in_a_step_saves_at_that_step_and_restores_the_handlers(tmp_path):
    """SIGTERM sent during batch 3: the checkpoint holds 3 batches, Lightning never sees the signal
    (it would end the fit with status 0), and the process's handlers are back in place afterwards."""
    import lightning as L
    from lightning.pytorch import Callback

    from multifeat.callbacks.interrupt import InterruptCheckpoint, RunInterrupted
    from multifeat.data import AttributeDataModule
    from multifeat.eval.evaluator import AttributeEvaluator

    class SignalAt(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    said: list[str] = []
    dm = AttributeDataModule(source="synthetic", image_size=16, num_samples=48, batch_size=8, val_fraction=0.0)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=str(tmp_path),
                        callbacks=[SignalAt(), InterruptCheckpoint(label="unit", resume_command="rerun it", say=said.append)])
    with pytest.raises(RunInterrupted) as info:
        trainer.fit(AttributeEvaluator(image_size=16, width=4, max_width=8), datamodule=dm)
    assert info.value.code == 143 and info.value.step == 3
    assert not trainer.received_sigterm
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert said == [f"unit interrupted by SIGTERM at step 3 (epoch 0); checkpoint {ckpt}; resume with: rerun it"]
    assert _loops(ckpt) == (3, 3)
    assert {s: signal.getsignal(s) for s in before} == before


def test_default_resume_command_replaces_an_earlier_ckpt_path(monkeypatch):
    from multifeat.callbacks.interrupt import default_resume_command

    monkeypatch.setattr(sys, "argv", ["multifeat", "fit", "--config", "a b.yaml", "--ckpt_path", "old.ckpt", "--trainer.max_steps=5"])
    assert default_resume_command("x/last.ckpt") == "multifeat fit --config 'a b.yaml' --trainer.max_steps=5 --ckpt_path x/last.ckpt"


@pytest.mark.slow
def test_sigterm_to_rank_zero_under_ddp_stops_both_ranks_at_one_step(tmp_path):
    """Two CPU processes (DDP, gloo); SIGTERM reaches rank 0 only: both ranks save together (rank 0
    writes), one line is printed, and the command exits with 143."""
    cfg = {**FIT_CONFIG, "trainer": {**FIT_CONFIG["trainer"], "devices": 2, "strategy": "ddp"}}
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "multifeat.cli", "fit", "--config", "fit.yaml"], cwd=tmp_path, env=ENV,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    reader = _Reader(proc)
    code, out = _interrupt(proc, reader, signal.SIGTERM,
                           lambda: reader.wait_for_file(tmp_path / "ckpt" / "last.ckpt", proc, timeout=300), timeout=180)
    assert code == 143, out[-3000:]
    lines = re.findall(r"training interrupted by SIGTERM at step (\d+)", out)
    assert len(lines) == 1, out[-3000:]
    assert _loops(tmp_path / "ckpt" / "last.ckpt")[0] == int(lines[0])
    assert not list((tmp_path / "ckpt").glob(".*.tmp"))
