"""DDP on CPU with two processes (gloo) for the GAN phases: parameters stay in sync across ranks,
only rank 0 writes the bank, the sample grids, the checkpoints and the logs, and StyleGAN2-ADA's
augmentation probability follows the rule applied to the statistics of *both* ranks.

Lightning's ``ddp`` strategy starts rank 1 by running the training script again, so each case runs
``tests/ddp/run_ddp.py`` in a subprocess; every rank writes a JSON of what it saw and wrote.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import tiny_phase1

from multifeat.phases.stylegan2ada import ada_adjust

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "ddp" / "run_ddp.py"
STEPS = 4  # run_ddp.py: grids and checkpoints every 2 steps; phase 1's bank at steps 0, 1, 2

pytestmark = pytest.mark.slow


def run_ddp(phase: str, out: Path, *extra: str) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), phase, str(out), "--steps", str(STEPS), *extra],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, f"run_ddp.py {phase} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    return ranks


def final_files(writes: list[str]) -> set[str]:
    """Paths written under ``run/`` (relative to it), without the temporary files of atomic writes."""
    return {w[len("run/"):] for w in writes if w.startswith("run/") and not Path(w).name.startswith(".")}


def check_common(ranks: list[dict], out: Path) -> None:
    r0, r1 = ranks
    # both ranks trained the same number of steps, on different data
    assert r0["global_step"] == r1["global_step"] == STEPS
    assert r0["indices"] and r1["indices"] and not set(r0["indices"]) & set(r1["indices"])
    # parameters: identical on both ranks, and training moved them
    assert r0["params"].keys() == r1["params"].keys() and r0["params"]
    diff = [k for k in r0["params"] if r0["params"][k] != r1["params"][k]]
    assert not diff, f"parameters out of sync across ranks: {diff[:5]}"
    changed = [k for k in r0["params"] if r0["params"][k] != r0["params_initial"][k]]
    assert len(changed) >= len(r0["params"]) // 2, "training left most parameters unchanged"
    # rank 1 never tried to create or replace a file; rank 0 wrote grids, checkpoints and logs
    for r in ranks:  # the probe saw each process's own canary write
        assert sum(w.startswith("canary/pid") for w in r["writes"]) == 1, r["writes"][:5]
    rank1 = [w for w in r1["writes"] if not w.startswith("canary/")]
    assert rank1 == [], f"rank 1 wrote {rank1[:10]}"
    run = out / "run"
    grids = sorted(p.name for p in (run / "samples").iterdir())
    assert grids == ["latest.png", "step_00000002.png", "step_00000004.png"]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"]
    written = final_files(r0["writes"])
    assert {f"samples/{g}" for g in grids} <= written
    assert {f"checkpoints/{c}" for c in ckpts} <= written
    assert "logs/version_0/metrics.csv" in written
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["version_0"]


def test_phase1_ddp_rank_zero_writes_bank_grids_checkpoints(tmp_path):
    from multifeat.io.bank import read_bank

    ranks = run_ddp("phase1", tmp_path)
    check_common(ranks, tmp_path)
    entries = read_bank(tmp_path / "run" / "negatives")
    # collections at steps 0, 1, 2 (first_steps=3, every step), 2 images each, written once
    assert sorted((e["step"], e["file"]) for e in entries) == sorted(
        (s, f"e00000_s{s:08d}_{i:03d}.png") for s in range(3) for i in range(2))
    pngs = sorted(p.name for p in (tmp_path / "run" / "negatives").glob("*.png"))
    assert pngs == sorted(e["file"] for e in entries)
    assert {f"negatives/{p}" for p in pngs} | {"negatives/index.json"} <= final_files(ranks[0]["writes"])


def _make_phase3_inputs(folder: Path) -> Path:
    from lightning.pytorch import Trainer, seed_everything

    from multifeat.data import AttributeDataModule, FeatureClassifierDataModule
    from multifeat.phases import FeatureClassifier

    quiet = dict(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                 enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    folder.mkdir(parents=True, exist_ok=True)
    seed_everything(0, verbose=False)
    p1 = tiny_phase1(num_fixed=4)
    t = Trainer(**quiet)
    t.fit(p1, datamodule=AttributeDataModule(image_size=16, require={"bald": True}, num_samples=16, batch_size=8,
                                             val_fraction=0.0))
    t.save_checkpoint(str(folder / "phase1.ckpt"))
    fc = FeatureClassifier(image_size=16, width=4, max_width=8)
    t = Trainer(**quiet)
    t.fit(fc, datamodule=FeatureClassifierDataModule(feature="bald", image_size=16, num_samples=16, batch_size=8,
                                                     val_fraction=0.0))
    t.save_checkpoint(str(folder / "phase2.ckpt"))
    return folder


def test_phase3_ddp_rank_zero_writes_and_parameters_in_sync(tmp_path):
    inputs = _make_phase3_inputs(tmp_path / "inputs")
    ranks = run_ddp("phase3", tmp_path / "out", "--inputs", str(inputs))
    check_common(ranks, tmp_path / "out")


def expected_ada(ranks: list[dict]) -> tuple[list[float], list[float]]:
    """p after every update from the rule on the SUMMED statistics, and from rank 0's alone."""
    settings = ranks[0]["ada"]
    logs = [r["ada"]["log"] for r in ranks]
    assert len(logs[0]) == len(logs[1]) == STEPS // settings["interval"]
    summed, alone = [], []
    p_sum = p_alone = settings["p_initial"]
    for e0, e1 in zip(*logs):
        signs, count = e0["local"][0] + e1["local"][0], e0["local"][1] + e1["local"][1]
        p_sum = ada_adjust(p_sum, signs / count, e0["global_batch"], settings["interval"], settings["target"], settings["kimg"])
        p_alone = ada_adjust(p_alone, e0["local"][0] / e0["local"][1], e0["global_batch"], settings["interval"],
                             settings["target"], settings["kimg"])
        summed.append(p_sum)
        alone.append(p_alone)
    return summed, alone


def test_stylegan2ada_ddp_reduces_ada_statistics(tmp_path):
    ranks = run_ddp("stylegan2ada", tmp_path)
    check_common(ranks, tmp_path)
    r0, r1 = ranks
    # the script skews the signs: every real logit of rank 0 counts as positive, of rank 1 as negative
    for e0, e1 in zip(r0["ada"]["log"], r1["ada"]["log"]):
        assert e0["local"][0] == e0["local"][1] > 0 and e1["local"][0] == -e1["local"][1]
        assert e0["global_batch"] == e1["global_batch"] == 2 * 4
    summed, alone = expected_ada(ranks)
    for r in ranks:  # p is a float32 buffer; one update moves it by 0.08
        assert [e["p_after"] for e in r["ada"]["log"]] == pytest.approx(summed, abs=1e-6)
        assert r["ada"]["p_final"] == pytest.approx(summed[-1], abs=1e-6)
    # rank 0's statistics alone would have moved p the other way: the check can tell
    assert alone[-1] > r0["ada"]["p_initial"] > summed[-1]


# ---------------------------------------------------------------------------------------------- pipeline
def _ddp_pipeline() -> dict:
    """tests/configs/tiny_pipeline.yaml on two processes, batches of 4, no G1 baseline evaluation."""
    from multifeat.utils.config import set_dotted

    cfg = yaml.safe_load((REPO / "tests" / "configs" / "tiny_pipeline.yaml").read_text())
    for item in ("name=ddp", "trainer.devices=2", "trainer.strategy=ddp_find_unused_parameters_true",
                 "phase1.data.batch_size=4", "phase1.trainer.max_epochs=1",
                 "phase1.callbacks.negative_bank={first_steps: 2, every_n_steps: 1, per_save: 2}",
                 "phase2.data.batch_size=4", "phase3.data.batch_size=4", "phase3.trainer.limit_train_batches=1",
                 "eval.baseline=false"):
        set_dotted(cfg, item, create=True, example="")
    return cfg


PIPELINE = _ddp_pipeline()


def test_pipeline_under_ddp_only_rank_zero_writes(tmp_path):
    from multifeat.io.bank import read_bank

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(copy.deepcopy(PIPELINE)))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "ddp" / "run_pipeline.py"), str(out), "--config", str(cfg),
                           "--run-dir", str(out / "run")], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=420)
    records = sorted((json.loads(p.read_text()) for p in (out / "ranks").glob("pid*.json")), key=lambda r: r["rank"])
    assert [r["rank"] for r in records] == [0, 1], records
    assert [(r["exit"], r["error"]) for r in records] == [(0, None), (0, None)], records
    assert proc.returncode == 0, proc.stderr[-4000:]
    for r in records:
        assert sum(w.startswith("canary-pid") for w in r["writes"]) == 1
    rank1 = [w for w in records[1]["writes"] if not w.startswith("canary-")]
    assert rank1 == [], f"rank 1 wrote {rank1[:10]}"
    run = out / "run"
    for phase in ("phase1", "phase2", "phase3"):
        assert (run / phase / "checkpoints" / "final.ckpt").is_file() and (run / phase / "done.json").is_file()
    assert (run / "eval" / "report.md").is_file() and (run / "summary.md").is_file()
    # 16 faces / batch 4 / 2 ranks = 2 steps: collections at steps 0 and 1, 2 images each, written once
    assert sorted(e["step"] for e in read_bank(run / "phase1" / "negatives")) == [0, 0, 1, 1]


# ---------------------------------------------------------------------------------------------- plain ddp
@pytest.mark.parametrize("phase", ["phase1", "phase3", "stylegan2ada"])
def test_plain_ddp_trains_exactly_like_find_unused_parameters(tmp_path, phase):
    """``strategy: ddp`` (no search for unused parameters) trains the GAN phases, to the same weights bit
    for bit as ``ddp_find_unused_parameters_true`` (docs/scaling.md)."""
    extra = ("--inputs", str(_make_phase3_inputs(tmp_path / "inputs"))) if phase == "phase3" else ()
    plain = run_ddp(phase, tmp_path / "plain", "--strategy", "ddp", *extra)
    check_common(plain, tmp_path / "plain")
    found = run_ddp(phase, tmp_path / "found", *extra)
    for r_plain, r_found in zip(plain, found):
        assert r_plain["params"] == r_found["params"]
