"""``multifeat forgetting`` at toy size: records, samples that re-judge to the recorded rates, branches
that start from exactly the trunk's state, skip and resume, the table's intervals against hand numbers."""

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from multifeat.bench.forgetting import load_config, planned_runs
from multifeat.bench.forgetting_report import mean_interval, summarize, table
from multifeat.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

#: 16 px, 4-channel nets, 4 batches per epoch, switch after 2 epochs (batch 8), judged every 4 batches
TINY = {
    "image_size": 16, "seeds": [0], "grid": {"f": ["identity"], "beta2": [30.0]}, "variants": ["c0", "d_h"],
    "data": {"num_samples": 64, "batch_size": 16},
    "gan": {"z_dim": 8, "g_width": 4, "d_width": 4, "max_width": 8},
    "phase1": {"steps": 6, "negative_bank": {"first_steps": 4, "every_n_steps": 2, "per_save": 4, "max_images": 8}},
    "phase2": {"width": 4, "max_width": 8, "num_samples": 64, "epoch_size": 64, "epochs": 1},
    "phase3": {"epochs": 4, "switch_epoch": 2, "eval_every": 4, "add_blocks": {8: 1}, "adain_at": "feat8"},
    "eval": {"n": 8},
}


def _cli(*args) -> str:
    """Run ``multifeat forgetting ARGS`` in this process; its standard output."""
    from multifeat.commands.forgetting import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(list(args)) == 0
    return buf.getvalue()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, immature_bank_16):
    from multifeat.eval.evaluator import default_cache_dir, train_evaluator

    d = tmp_path_factory.mktemp("forgetting")
    immature_bank_16(default_cache_dir())
    ev = train_evaluator(image_size=16, max_steps=3, num_samples=64, width=4, max_width=8, out_path=d / "judge.ckpt")
    cfg = d / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    return {"dir": d, "evaluator": str(ev), "config": str(cfg)}


@pytest.fixture(scope="module")
def run(setup):
    out = setup["dir"] / "out"
    return {**setup, "out": out, "stdout": _cli("--config", setup["config"], "--evaluator", setup["evaluator"], "--out", str(out))}


def _records(out):
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))}


def test_records_points_and_judge_hash(run):
    recs = _records(run["out"])
    assert set(recs) == {"c0-identity-b30-s0", "d_h-identity-b30-s0"}
    judge_sha = hashlib.sha256(Path(run["evaluator"]).read_bytes()).hexdigest()
    for r in recs.values():
        assert [p["step"] for p in r["points"]] == [0, 4, 8, 12, 16]  # 4 epochs x 4 batches, every 4
        assert r["switch_step"] == 8 and r["steps"] == 16
        assert r["evaluator"]["sha256"] == judge_sha
        assert r["training_sets"]["phase3"]["joint"] == 0 and r["training_sets"]["phase1"]["joint"] == 0
        assert r["training_sets"]["phase2"]["joint"] == 0
    # c0 never switches; d_h switches to bald faces and combines with H after batch 8
    assert [p["stage"] for p in recs["c0-identity-b30-s0"]["points"]] == ["before"] * 5
    assert [(p["stage"], p["adain"]) for p in recs["d_h-identity-b30-s0"]["points"][3:]] == [("after", True)] * 2
    lines = (run["out"] / "records.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["key"] for x in lines) == sorted(recs)
    assert "| c0: D2 terms, no switch | identity | 30 | 1 |" in (run["out"] / "table.md").read_text()
    assert (run["out"] / "forgetting.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_samples_rejudge_to_the_recorded_rates(run):
    from multifeat.eval.evaluator import load_evaluator
    from multifeat.phases.feature_classifier import FeatureClassifier

    ev = load_evaluator(run["evaluator"])
    d2 = FeatureClassifier.load_from_checkpoint(run["out"] / "work" / "s0" / "phase2" / "final.ckpt").eval()
    cols = [list(ev.attributes).index("bald"), list(ev.attributes).index("beard")]
    r = _records(run["out"])["d_h-identity-b30-s0"]
    samples = {}
    for rel in r["samples"]:
        samples.update(torch.load(run["out"] / rel, weights_only=True))
    assert sorted(samples) == [p["step"] for p in r["points"]]
    for p in r["points"]:
        x = samples[p["step"]]
        assert x.dtype == torch.uint8 and x.shape == (8, 3, 16, 16)
        present = ev.predict_proba(x.float() / 127.5 - 1.0)[:, cols] > 0.5
        assert p["bald"] == pytest.approx(present[:, 0].float().mean().item(), abs=1e-6)
        assert p["beard"] == pytest.approx(present[:, 1].float().mean().item(), abs=1e-6)
        assert p["joint"] == pytest.approx(present.all(dim=1).float().mean().item(), abs=1e-6)
        assert p["d2_mean"] == pytest.approx(d2(x.float() / 127.5 - 1.0).mean().item(), abs=1e-5)  # the seed's frozen D2


def test_branches_start_from_exactly_the_trunk(run):
    recs = _records(run["out"])
    trunk_ckpt = run["out"] / "work" / "s0" / "trunk-identity-b30-s0" / "trunk.ckpt"
    state = torch.load(trunk_ckpt, map_location="cpu", weights_only=False)["state_dict"]
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        if name.startswith(("generator.", "discriminator.", "g3_ema.")):
            h.update(name.encode())
            h.update(t.contiguous().numpy().tobytes())
    trunk_hash = h.hexdigest()[:16]
    for r in recs.values():
        assert r["start"]["step"] == 8  # resumed at the switch point, not retrained from batch 0
        assert r["start"]["state_hash"] == trunk_hash == r["start"]["trunk_end_hash"]
    a, b = recs["c0-identity-b30-s0"]["points"], recs["d_h-identity-b30-s0"]["points"]
    assert a[:3] == b[:3]  # the trunk's judgements, shared
    # then they part: other data and AdaIN after the switch train other weights
    assert recs["c0-identity-b30-s0"]["end_state_hash"] != recs["d_h-identity-b30-s0"]["end_state_hash"]


def test_rerun_skips_and_a_lost_record_is_redone_identically(run):
    out = run["out"]
    before = _records(out)
    keep = out / "records" / "c0-identity-b30-s0.json"
    lost = out / "records" / "d_h-identity-b30-s0.json"
    trunk_marker = out / "work" / "s0" / "trunk-identity-b30-s0" / "trunk.json"
    mtimes = (keep.stat().st_mtime_ns, trunk_marker.stat().st_mtime_ns)
    lost.unlink()
    stdout = _cli("--config", run["config"], "--evaluator", run["evaluator"], "--out", str(out))
    assert "1/2 c0" not in stdout and "2/2 d_h-identity-b30-s0" in stdout
    assert (keep.stat().st_mtime_ns, trunk_marker.stat().st_mtime_ns) == mtimes  # skipped, trunk reused
    again = _records(out)["d_h-identity-b30-s0"]
    assert again["points"] == before["d_h-identity-b30-s0"]["points"]  # the branch is deterministic on CPU


def test_another_judge_is_refused_in_the_same_folder(run, tmp_path):
    from multifeat.eval.evaluator import train_evaluator

    other = train_evaluator(image_size=16, max_steps=2, num_samples=64, width=4, max_width=8, seed=5, out_path=tmp_path / "o.ckpt")
    with pytest.raises(ConfigError, match=r"c0-identity-b30-s0\.json' was written with another config or judge"):
        _cli("--config", run["config"], "--evaluator", str(other), "--out", str(run["out"]))


def test_g1_and_d2_do_not_depend_on_the_process_random_state(setup, tmp_path):
    """torch seeds its default generator randomly in each process: G1 and D2 must come from the seed alone."""
    from multifeat.bench.forgetting import Experiment, load_judge

    cfg = load_config(setup["config"], overrides=[f"evaluator.path={setup['evaluator']}"])
    states = []
    for k, pre in enumerate((1, 2)):
        torch.manual_seed(pre)
        exp = Experiment(cfg, tmp_path / f"r{k}", load_judge(cfg, log=lambda m: None), log=lambda m: None)
        exp.shared(0)
        states.append({ph: torch.load(tmp_path / f"r{k}" / "work" / "s0" / ph / "final.ckpt", map_location="cpu",
                                      weights_only=False)["state_dict"] for ph in ("phase1", "phase2")})
    for ph in ("phase1", "phase2"):
        a, b = states[0][ph], states[1][ph]
        assert a.keys() == b.keys() and len(a) > 0
        assert all(torch.equal(a[n], b[n]) for n in a), ph


def test_rejudge_rerates_stored_samples_and_a_rerun_then_resumes(run, tmp_path):
    import shutil

    from multifeat.eval.evaluator import load_evaluator, train_evaluator
    from multifeat.phases.phase1 import Phase1GAN

    out = tmp_path / "copy"
    shutil.copytree(run["out"], out)
    before = _records(out)
    other = train_evaluator(image_size=16, max_steps=2, num_samples=64, width=4, max_width=8, seed=7, out_path=tmp_path / "o.ckpt")
    stdout = _cli("--config", run["config"], "--evaluator", str(other), "--out", str(out), "--rejudge")
    assert "re-judged 2 records, 1 trunks and 1 G1s" in stdout
    ev = load_evaluator(other)
    cols = [list(ev.attributes).index("bald"), list(ev.attributes).index("beard")]
    sha = hashlib.sha256(Path(other).read_bytes()).hexdigest()
    changed = 0
    for key, rec in _records(out).items():
        assert rec["evaluator"]["sha256"] == sha and rec["final"] == rec["points"][-1]
        samples = {}
        for rel in rec["samples"]:
            samples.update(torch.load(out / rel, weights_only=True))
        for p, old in zip(rec["points"], before[key]["points"], strict=True):
            present = ev.predict_proba(samples[p["step"]].float() / 127.5 - 1.0)[:, cols] > 0.5
            assert p["bald"] == pytest.approx(present[:, 0].float().mean().item(), abs=1e-6)
            assert p["joint"] == pytest.approx(present.all(dim=1).float().mean().item(), abs=1e-6)
            assert p["d2_mean"] == old["d2_mean"] and p["step"] == old["step"]  # D2's view does not depend on the judge
            changed += (p["bald"], p["beard"]) != (old["bald"], old["beard"])
    assert changed > 0  # another judge, other verdicts: the rewrite is not a copy
    # G1's rates: G1 regenerated from its checkpoint on the experiment's noise, rated by the new judge
    from multifeat.bench.forgetting import evaluation_noise, load_config

    cfg = load_config(run["config"])
    g1 = Phase1GAN.load_from_checkpoint(out / "work" / "s0" / "phase1" / "final.ckpt", map_location="cpu").eval()
    x = ((g1.generate(evaluation_noise(cfg)).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    present = ev.predict_proba(x.float() / 127.5 - 1.0)[:, cols] > 0.5
    assert _records(out)["c0-identity-b30-s0"]["g1_rates"]["bald"] == pytest.approx(present[:, 0].float().mean().item(), abs=1e-6)
    # the folder is now the new judge's: a run with it trains nothing and keeps the records
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
    stdout = _cli("--config", run["config"], "--evaluator", str(other), "--out", str(out))
    assert "1/2" not in stdout and "2/2" not in stdout
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")} == mtimes


def test_rejudge_names_missing_samples(run, tmp_path):
    import shutil

    from multifeat.errors import DataError

    out = tmp_path / "copy"
    shutil.copytree(run["out"], out)
    (out / "samples" / "c0-identity-b30-s0.pt").unlink()
    before = (out / "records" / "d_h-identity-b30-s0.json").read_text()
    with pytest.raises(DataError, match=r"c0-identity-b30-s0\.pt', which do not exist"):
        _cli("--config", run["config"], "--evaluator", run["evaluator"], "--out", str(out), "--rejudge")
    assert (out / "records" / "d_h-identity-b30-s0.json").read_text() == before  # nothing rewritten


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_records(run, tmp_path):
    out = tmp_path / "killed"
    # the reference ran in this process: the killed run uses as many torch threads, so its float sums match
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    args = [sys.executable, "-m", "multifeat.cli", "forgetting", "--config", run["config"], "--evaluator", run["evaluator"],
            "--out", str(out), "--threads", str(torch.get_num_threads())]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "records" / "c0-identity-b30-s0.json"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists()
    _cli("--config", run["config"], "--evaluator", run["evaluator"], "--out", str(out))
    got, ref = _records(out), _records(run["out"])
    assert set(got) == set(ref)
    for key in ref:
        for g, r in zip(got[key]["points"], ref[key]["points"], strict=True):
            assert {k: g[k] for k in ("step", "stage", "bald", "beard", "joint")} == {k: r[k] for k in ("step", "stage", "bald", "beard", "joint")}
            assert g["d2_mean"] == pytest.approx(r["d2_mean"], abs=1e-4)  # another process: float sums may differ in the last bits


def test_print_config_and_bad_values(setup):
    printed = _cli("--config", setup["config"], "--print-config")
    assert printed.startswith("# config hash: ")
    assert yaml.safe_load(printed)["phase3"]["switch_epoch"] == 2
    with pytest.raises(ConfigError, match=r"forgetting config: variants: .*Got value: x"):
        load_config(setup["config"], overrides=["variants=[c, x]"])
    with pytest.raises(ConfigError, match=r"forgetting config: phase3\.epochs: Expected a <class 'int'>. Got value: many"):
        load_config(setup["config"], overrides=["phase3.epochs=many"])
    with pytest.raises(ConfigError, match=r"forgetting config: grid\.f: .*Got value: relu"):
        load_config(setup["config"], overrides=["grid.f=[relu]"])
    with pytest.raises(ConfigError, match="eval_every=5 must divide the switch batch 8"):
        load_config(setup["config"], overrides=["phase3.eval_every=5"])
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        load_config(setup["config"], overrides=["phase3.epoch=3"])
    quick = load_config(quick=True)
    assert quick["seeds"] == [0] and quick["phase3"]["epochs"] * 32 >= 960


def test_default_plan_shares_trunks():
    cfg = load_config()
    runs = planned_runs(cfg)
    assert len(runs) == 5 + 4 * 6 * 5  # b0 per seed; four branches per (f, beta2, seed)
    assert len({r.trunk_key for r in runs if r.variant != "b0"}) == 30
    assert cfg["phase3"]["epochs"] * 32 >= 960 and runs[0].f is None and (runs[1].f, runs[1].beta2) == ("identity", 30.0)


def test_interval_and_kept_vs_b0_by_hand():
    m, hw = mean_interval([0.2, 0.4, 0.6])
    assert m == pytest.approx(0.4)
    assert hw == pytest.approx(4.302653 * 0.2 / 3 ** 0.5, rel=1e-5)  # t(0.975, 2) sd / sqrt(n)
    assert mean_interval([0.5]) == (0.5, None)

    def rec(v, seed, bald, f=None, b=None):
        pts = [{"step": 0, "bald": 1.0, "beard": 0.0, "joint": 0.0}, {"step": 8, "bald": bald, "beard": 0.5, "joint": 0.25}]
        return {"variant": v, "f": f, "beta2": b, "seed": seed, "switch_step": 0, "points": pts, "final": pts[-1]}

    recs = [rec("b0", 0, 0.1), rec("b0", 1, 0.3), rec("c0", 0, 0.5, "identity", 30.0), rec("c0", 1, 0.9, "identity", 30.0)]
    rows = {r["variant"]: r for r in summarize(recs, ("bald", "beard"))}
    # kept vs b0 pairs seeds: (0.5 - 0.1, 0.9 - 0.3) = (0.4, 0.6): mean 0.5, half-width t(0.975, 1) * sd / sqrt(2)
    assert rows["c0"]["kept_vs_b0"][0] == pytest.approx(0.5)
    assert rows["c0"]["kept_vs_b0"][1] == pytest.approx(12.7062 * (0.02 ** 0.5) / 2 ** 0.5, rel=1e-4)
    assert rows["b0"]["kept_vs_b0"] is None
    md = table(recs, ("bald", "beard"))
    assert "| c0: D2 terms, no switch | identity | 30 | 2 | 100.0 ± 0.0 | 70.0 ± 254.1 | 50.0 ± 0.0 | 25.0 ± 0.0 | 50.0 ± 127.1 | – |" in md


@pytest.mark.slow
def test_workers_split_seeds_and_give_the_same_records(run, tmp_path):
    out = tmp_path / "workers"
    _cli("--config", run["config"], "--evaluator", run["evaluator"], "--out", str(out), "--seeds", "0,1", "--variants", "c0",
         "--workers", "2")
    got = _records(out)
    assert set(got) == {"c0-identity-b30-s0", "c0-identity-b30-s1"}
    ref = _records(run["out"])["c0-identity-b30-s0"]["points"]
    assert [(p["step"], p["bald"], p["beard"], p["joint"]) for p in got["c0-identity-b30-s0"]["points"]] == \
        [(p["step"], p["bald"], p["beard"], p["joint"]) for p in ref]
    assert len((out / "records.jsonl").read_text().splitlines()) == 2


def test_agreement_of_two_runs_by_hand(tmp_path):
    from multifeat.bench.forgetting_report import agreement, agreement_table, write_outputs

    def rec(seed, bald, beard):
        pts = [{"step": 0, "bald": 0.0, "beard": 0.0, "joint": 0.0}, {"step": 8, "bald": bald, "beard": beard, "joint": 0.0}]
        return {"variant": "c", "f": "identity", "beta2": 30.0, "seed": seed, "switch_step": 0, "points": pts, "final": pts[-1]}

    t2 = 12.7062  # t(0.975, 1)
    first = [rec(0, 0.4, 0.10), rec(1, 0.6, 0.12)]   # bald 0.5 ± t2 * 0.1414 / 1.414 = 0.5 ± 1.27; beard 0.11 ± 0.127
    second = [rec(0, 0.5, 0.50), rec(1, 0.7, 0.52)]  # bald 0.6 (inside); beard 0.51, 0.40 away: outside 0.127
    rows = {r["metric"]: r for r in agreement(first, second, ("bald", "beard"))}
    assert rows["bald"]["first"][0] == pytest.approx(0.5) and rows["bald"]["first"][1] == pytest.approx(t2 * 0.1, rel=1e-4)
    assert rows["bald"]["agree"] is True
    assert rows["beard"]["second"][0] == pytest.approx(0.51) and rows["beard"]["agree"] is False
    assert rows["joint"]["agree"] is True  # both 0 ± 0
    assert agreement(first[:1], second, ("bald", "beard"))[0]["agree"] is None  # one seed: no interval, no verdict
    md = agreement_table(list(rows.values()), ("one thread", "two threads"))
    assert "| c: D2 terms + switch | identity | 30 | beard | 11.0 ± 12.7 | 51.0 ± 12.7 | **no** |" in md
    files = write_outputs(tmp_path, first, ("bald", "beard"), second=second, labels=("one thread", "two threads"))
    assert Path(files["agreement"]).read_text() == md
    assert json.loads(Path(files["summary"]).read_text())["agreement"]["labels"] == ["one thread", "two threads"]


def test_compare_needs_records(setup, tmp_path):
    (tmp_path / "records").mkdir()
    with pytest.raises(ConfigError, match=r"--compare '.*' holds no records"):
        _cli("--config", setup["config"], "--out", str(tmp_path), "--report-only", "--compare", str(tmp_path / "none"))


def test_sample_sheet_shows_the_stored_samples(run, tmp_path):
    import numpy as np
    from PIL import Image

    from multifeat.bench.forgetting import read_records
    from multifeat.bench.forgetting_report import sample_sheet

    recs = list(read_records(run["out"]))
    path = sample_sheet(run["out"], recs, tmp_path / "s.png", n=4, upscale=2)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    s, label_w, top, row_h, gap = 32, 250, 40, 38, 16  # 16 px samples upscaled 2x; the layout of sample_sheet
    assert sheet.shape[0] == top + 2 * row_h + 6  # two variants (c0, d_h), b0 not run here
    rec = next(r for r in recs if r["variant"] == "d_h")
    stored = {}
    for rel in rec["samples"]:
        stored.update(torch.load(run["out"] / rel, weights_only=True))
    end_tile = stored[rec["points"][-1]["step"]][2].permute(1, 2, 0).numpy().repeat(2, 0).repeat(2, 1)
    y, x = top + 1 * row_h, label_w + 4 * s + gap + 2 * s  # second row (d_h), end column, third sample
    assert np.array_equal(sheet[y:y + s, x:x + s], end_tile)
    assert sample_sheet(tmp_path / "nothing", recs, tmp_path / "n.png") is None  # no stored samples there
