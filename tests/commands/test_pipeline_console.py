"""What ``multifeat pipeline`` prints: phase lines, progress and the result on the console; the
libraries' messages (Lightning, W&B, warnings) in ``<run>/pipeline.log``; ``--verbose`` shows them."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from multifeat.loggers import QuietConsole

REPO = Path(__file__).resolve().parents[2]
NOISE = ("Tip:", "litlogger", "wandb:", "LeafSpec", "validation_step", "in eval mode", "GPU available", "Run history",
         "LOCAL_RANK", "Trainer.fit")


# ---------------------------------------------------------------------------------------------- quick
def test_quiet_console_sends_library_output_to_the_log(tmp_path, capsys):
    import lightning.pytorch  # noqa: F401  (installs Lightning's console handler)

    log = tmp_path / "run.log"
    with QuietConsole(log) as qc:
        qc.line("phase1: starting")
        print("a library's message")
        print("an error message", file=sys.stderr)
        logging.getLogger("lightning.pytorch").warning("a Lightning record")
        warnings.warn_explicit("a library warning", UserWarning, "/site-packages/other/x.py", 1)
        warnings.warn_explicit("the data hold 3 unreadable files", UserWarning, str(REPO / "multifeat/data/celeba.py"), 1)
        warnings.warn_explicit("`isinstance(treespec, LeafSpec)` is deprecated", UserWarning,
                               str(REPO / "multifeat/data/celeba.py"), 2)
        qc.write_log("details for the log")
    out = capsys.readouterr()
    assert out.out.splitlines() == ["phase1: starting", "warning: the data hold 3 unreadable files"]
    assert out.err == ""
    text = log.read_text()
    for s in ("phase1: starting", "a library's message", "an error message", "a Lightning record", "a library warning",
              "unreadable files", "LeafSpec", "details for the log"):
        assert s in text, s
    # everything is back in place afterwards
    print("after")
    logging.getLogger("lightning.pytorch").warning("after, Lightning")
    assert "after" in capsys.readouterr().out and "after" not in log.read_text()


def test_verbose_console_shows_everything(tmp_path, capsys):
    log = tmp_path / "run.log"
    with QuietConsole(log, verbose=True) as qc:
        qc.line("phase1: starting")
        print("a library's message")
        qc.write_log("details")
    out = capsys.readouterr().out
    assert out.splitlines() == ["phase1: starting", "a library's message", "details"]


def test_progress_lines_without_a_terminal(tmp_path):
    """ConsoleProgress in a real fit: a line every N batches, no carriage return."""
    import io

    import lightning as L

    from multifeat.callbacks.progress import ConsoleProgress
    from multifeat.data import AttributeDataModule
    from multifeat.eval.evaluator import AttributeEvaluator

    buf = io.StringIO()
    dm = AttributeDataModule(source="synthetic", image_size=16, num_samples=40, batch_size=8, val_fraction=0.0)
    model = AttributeEvaluator(image_size=16, width=4, max_width=8, immature_fraction=0.0)  # no generator bank to train
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path),
                        callbacks=[ConsoleProgress("phase9", stream=buf, every=3)])
    trainer.fit(model, datamodule=dm)
    assert "\r" not in buf.getvalue()
    assert [ln.split(",")[0] for ln in buf.getvalue().splitlines()] == [
        "phase9: batch 3/10 (30 %)", "phase9: batch 6/10 (60 %)", "phase9: batch 9/10 (90 %)", "phase9: batch 10/10 (100 %)"]


# ---------------------------------------------------------------------------------------------- a real run
@pytest.mark.slow
def test_pipeline_console_is_quiet_and_the_log_has_the_rest(tmp_path, immature_bank_16):
    immature_bank_16(tmp_path / "cache" / "evaluators")
    cfg = yaml.safe_load((REPO / "tests" / "configs" / "tiny_pipeline.yaml").read_text())
    cfg["logger"] = "wandb"
    cfg["trainer"]["enable_progress_bar"] = True
    cfg["eval"]["args"]["n"] = 8
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    # W&B and Python's warnings as a user has them: nothing silenced by the environment
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "PYTHONWARNINGS"}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "offline",
                "MULTIFEAT_CACHE": str(tmp_path / "cache")})
    r = subprocess.run([sys.executable, "-m", "multifeat.cli", "pipeline", "--config", str(cfg_path), "--run-dir", str(run)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    out = r.stdout + r.stderr
    assert "\r" not in out
    for noise in NOISE:
        assert noise not in out, noise
    lines = out.splitlines()
    for phase in ("phase1", "phase2", "phase3"):
        assert sum(ln.startswith(f"[pipeline] {phase}: starting") for ln in lines) == 1
        assert sum(ln.startswith(f"[pipeline] {phase}: finished in") for ln in lines) == 1
        assert any(ln.startswith(f"{phase}: batch ") for ln in lines)
    assert any(ln.startswith("| set | n | bald rate | beard rate | joint (bald+beard)") for ln in lines)
    assert any(ln.startswith("| G3 (phase 3) | 8 |") for ln in lines) and any(ln.startswith("| G1 (baseline) | 8 |") for ln in lines)
    assert f"Summary: {run / 'summary.md'}" in out
    # the phase lines, progress lines and the table: nothing else of substance
    other = [ln for ln in lines if ln.strip() and not ln.startswith(("[pipeline] ", "phase1: batch", "phase2: batch",
                                                                     "phase3: batch", "|", "Run folder:", "  ", "Summary:",
                                                                     "Judge: ", "Feature-2 false-positive probe: "))]
    # one actionable warning may stand there, once: how to get standard InceptionV3 FID features
    inception = [ln for ln in other if ln.startswith("warning: InceptionV3 features for FID/KID are unavailable")]
    assert len(inception) <= 1 and (not inception or "torch-fidelity" in inception[0] or "weights-inception" in inception[0])
    assert [ln for ln in other if ln not in inception] == []
    log = (run / "pipeline.log").read_text()
    for kept in ("wandb: Run history", "LeafSpec", "[pipeline] eval: multifeat evaluate --generator"):
        assert kept in log, kept
    assert "\r" not in log


@pytest.mark.slow
def test_verbose_pipeline_prints_the_libraries_messages(tmp_path):
    cfg = yaml.safe_load((REPO / "tests" / "configs" / "tiny_pipeline.yaml").read_text())
    cfg["eval"]["enabled"] = False
    cfg["phase2"]["trainer"]["max_epochs"] = 1
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    r = subprocess.run([sys.executable, "-m", "multifeat.cli", "pipeline", "--config", str(cfg_path), "--run-dir",
                        str(tmp_path / "run"), "--stop-after", "phase1", "--verbose"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    out = r.stdout + r.stderr
    assert "[pipeline] phase1: starting" in out and "LeafSpec" in out
