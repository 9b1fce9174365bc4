"""The MultiFeat-Synth benchmark: the no-joint-images guard, statistics, report files, resume, CelebA.

Quick tests check the pieces against hand-worked numbers and plain re-computations; the slow ones run
the whole benchmark at toy size (``--smoke``: 16 px, a few steps) and check the files it writes
against its own per-seed records. ``--quick`` itself takes about 3.5-4 minutes on a 2-core CPU (see
docs/benchmark.md), beyond the slow-test budget, so the tests run ``--smoke``, which goes through the
same code paths.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from multifeat.bench import protocol as B
from multifeat.bench.methods import METHODS, resolve_methods, train_cgan
from multifeat.bench.report import bar_chart, load_row, mean_std, save_row
from multifeat.bench.training import Context
from multifeat.data import JointFreeDataModule, JointImageError, assert_no_joint, count_joint
from multifeat.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from celeba_fixtures import CELEBA_COLUMNS, make_celeba  # noqa: E402

FEATURES = ("bald", "beard")


def _plain_joint_count(dm) -> int:
    """Reference count: render every item of every split and look at its labels."""
    dm.setup("fit")
    n = 0
    for ds in (dm.train_set, dm.val_set):
        if ds is None:
            continue
        for i in range(len(ds)):
            a = ds[i]["attrs"]
            n += int(a[0] > 0.5 and a[1] > 0.5)
    return n


# ------------------------------------------------------------------------------------ config
#: protocol hash of the default protocol, as recorded by runs (results.json "config_hash"); it must not
#: change when only the code around the protocol changes. It changed when the DCGAN section gained
#: `ema_rampup` and `augment` (both off by default: same training, new keys), and when method e's default
#: became `styles: projected` (held-out targets, the paper's procedure) with the new key `project_space`
#: (and `--quick` projects for 25 steps).
DEFAULT_PROTOCOL_HASH = "384a61a3883bbfc6"
SMOKE_PROTOCOL_HASH = "1db0c314dd03ef02"
QUICK_PROTOCOL_HASH = "de0c791f5b7f0fe2"


def test_default_protocol_hash_is_stable(repo_root):
    assert B.protocol_hash(B.load_config(None)) == DEFAULT_PROTOCOL_HASH
    assert B.protocol_hash(B.load_config(None, preset="smoke")) == SMOKE_PROTOCOL_HASH
    assert B.protocol_hash(B.load_config(None, preset="quick")) == QUICK_PROTOCOL_HASH
    # the experiment file and the packaged name resolve to the same protocol
    assert B.load_config(repo_root / "experiments" / "bench_synth.yaml") == B.load_config(None)
    assert B.load_config("synth") == B.load_config(None)


def test_packaged_protocol_is_the_only_default(repo_root):
    """Every key of the default lives in the packaged YAML; the experiment file only selects it."""
    packaged = yaml.safe_load((B.PROTOCOLS_DIR / "synth.yaml").read_text())
    assert B.default_config() == packaged
    small = yaml.safe_load((repo_root / "experiments" / "bench_synth.yaml").read_text())
    assert set(small) <= {"protocol"} and len(small) <= 1
    # presets only name keys of the default protocol (deep_merge is strict)
    for name in B.PRESETS:
        assert B.deep_merge(packaged, B.preset_config(name), name)["protocol"] == "MultiFeat-Synth"


def test_config_path_resolution_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"'no-such-protocol' is neither a file nor a packaged protocol.*synth"):
        B.load_config("no-such-protocol")
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        B.load_config(None, preset="fast")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list.yaml' must be a mapping"):
        B.load_config(listed)


def test_config_errors_name_the_key(repo_root, tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        B.load_config(None, overrides=["gan.stepz=3"])
    with pytest.raises(ConfigError, match="joint_fraction must be 0.0"):
        B.load_config(None, overrides=["data.joint_fraction=0.1"])
    with pytest.raises(ConfigError, match=r"seeds \[10000\]"):
        B.load_config(None, overrides=["seeds=[0, 10000]"])
    with pytest.raises(ConfigError, match="needs data.root"):
        B.load_config(repo_root / "experiments" / "celeba" / "bench.yaml", overrides=["data.root=null"])
    bad = tmp_path / "b.yaml"
    bad.write_text("gan: {width: 3}\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(bad))}.gan: unknown key 'width'"):
        B.load_config(bad)
    cfg = B.load_config(None, preset="quick", overrides=["gan.steps=7", "eval.n=10"])
    assert cfg["gan"]["steps"] == 7 and cfg["eval"]["n"] == 10 and cfg["seeds"] == [0, 1]


def test_resolve_methods_by_key_and_id():
    assert [m.key for m in resolve_methods("d,a,c-method-a")] == ["a", "c", "d"]
    assert len(resolve_methods([m.key for m in METHODS])) == 7
    with pytest.raises(ConfigError, match="unknown method 'z'"):
        resolve_methods("a,z")
    assert [m.key for m in METHODS if m.sees_joint] == ["g"]


def test_protocol_hash_ignores_runtime_keys_only():
    cfg = B.load_config(None)
    h = B.protocol_hash(cfg)
    assert B.protocol_hash({**cfg, "seeds": [5], "threads": 1, "methods": ["a"]}) == h
    other = B.load_config(None, overrides=["gan.steps=301"])
    assert B.protocol_hash(other) != h


# ------------------------------------------------------------------------------------ guard
def test_guard_fails_on_a_training_set_with_joint_images():
    from multifeat.data import AttributeDataModule

    dm = AttributeDataModule(image_size=16, num_samples=64, synthetic={"joint_fraction": 0.25}, val_fraction=0.25)
    expected = _plain_joint_count(dm)
    assert expected > 0
    assert count_joint(dm, FEATURES)["joint"] == expected
    with pytest.raises(JointImageError, match=rf"my training set: the training data hold {expected} image"):
        assert_no_joint(dm, FEATURES, "my training set")

    clean = AttributeDataModule(image_size=16, num_samples=64, synthetic={"joint_fraction": 0.0}, val_fraction=0.25)
    assert _plain_joint_count(clean) == 0
    assert assert_no_joint(clean, FEATURES, "clean") == {"images": 64, "labelled": 64, "joint": 0, "generated": 0}


def test_guard_sees_feature_classifier_and_switching_data():
    from multifeat.data import FeatureClassifierDataModule
    from multifeat.data.switching import SwitchingDataModule

    # bald positives drawn without joint_fraction include bearded ones: refused
    d2 = FeatureClassifierDataModule(feature="bald", image_size=16, num_samples=32, val_fraction=0.25)
    with pytest.raises(JointImageError, match="phase 2"):
        assert_no_joint(d2, FEATURES, "phase 2")
    ok = FeatureClassifierDataModule(feature="bald", image_size=16, num_samples=32, val_fraction=0.25,
                                     synthetic={"joint_fraction": 0.0})
    counts = assert_no_joint(ok, FEATURES, "phase 2")
    assert counts["images"] == 32 * 2 + 32  # positives, real negatives, degraded copies of the positives
    sw = SwitchingDataModule(before={"beard": True, "bald": False}, after={"bald": True}, image_size=16, num_samples=32,
                             val_fraction=0.0)  # 'after' = bald faces with beards allowed
    with pytest.raises(JointImageError, match=r"after/train"):
        assert_no_joint(sw, FEATURES, "phase 3")


def test_benchmark_method_refuses_joint_training_data(tmp_path):
    """A method's training data with a joint image stop the run before anything trains."""
    cfg = B.load_config(None, preset="smoke")
    cfg["data"]["joint_fraction"] = None  # bypass the config check: faces drawn independently (some joint)
    ctx = Context(cfg, FEATURES, log=lambda m: None)
    with pytest.raises(JointImageError, match="method f"):
        train_cgan(ctx, 0, tmp_path)
    assert not (tmp_path / "generator.ckpt").exists()


def test_a_method_trains_the_same_weights_whatever_the_process_random_state(tmp_path):
    """torch seeds its default generator randomly in each process; the benchmark's networks are built before
    fit() seeds, so the runner seeds first: two different global states before the same (method, seed) train
    identical generators."""
    from multifeat.bench.runner import _train

    cfg = B.load_config(None, preset="smoke")
    ctx = Context(cfg, FEATURES, log=lambda m: None)
    spec = resolve_methods("a")[0]
    states = []
    for k, pre in enumerate((1, 2)):
        torch.manual_seed(pre)
        _train(ctx, spec, 0, tmp_path / f"r{k}")
        ckpt = next((tmp_path / f"r{k}").rglob("generator.ckpt"))
        states.append(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    assert states[0].keys() == states[1].keys() and len(states[0]) > 0
    assert all(torch.equal(states[0][n], states[1][n]) for n in states[0])


def _celeba_truth(info) -> tuple[np.ndarray, np.ndarray]:
    v = info["values"] > 0
    col = {c: i for i, c in enumerate(CELEBA_COLUMNS)}
    bald = v[:, col["Bald"]]
    beard = v[:, col["Goatee"]] | v[:, col["Mustache"]] | ~v[:, col["No_Beard"]]
    return bald, beard


def test_joint_free_datamodule_on_celeba(tmp_path):
    info = make_celeba(tmp_path, n=60, partition=False, seed=3)
    bald, beard = _celeba_truth(info)
    joint = bald & beard
    assert joint.sum() > 0
    dm = JointFreeDataModule(exclude_joint=FEATURES, source="celeba", root=str(tmp_path), image_size=8,
                             val_fraction=0.2, seed=0, batch_size=4)
    dm.setup("fit")
    kept = set()
    for ds in (dm.train_set, dm.val_set):
        base = ds.dataset.dataset  # JointFree Subset -> split Subset -> CelebADataset
        for i in ds.indices:
            kept.add(base.files[ds.dataset.indices[i]])
    want = {f for f, j in zip(info["files"], joint) if not j}
    assert kept == want
    assert sum(dm.removed.values()) == int(joint.sum())
    assert assert_no_joint(dm, FEATURES, "celeba")["joint"] == 0
    from multifeat.data import AttributeDataModule

    plain = count_joint(AttributeDataModule(source="celeba", root=str(tmp_path), image_size=8, val_fraction=0.2),
                        FEATURES)
    assert plain["joint"] == int(joint.sum())


# ------------------------------------------------------------------------------------ statistics and images
def test_mean_std_hand_worked():
    s = mean_std([0.1, 0.2, 0.4])
    assert s["mean"] == pytest.approx(0.7 / 3)
    # deviations -0.1333, -0.0333, 0.1667: squares sum 0.046667, / (3 - 1) = 0.023333
    assert s["std"] == pytest.approx(math.sqrt(0.0466667 / 2), rel=1e-5)
    s = mean_std([0.5, None])
    assert s == {"mean": 0.5, "std": None, "n": 1, "values": [0.5, None]}
    assert mean_std([None])["mean"] is None


def test_row_png_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 16, 16), generator=g).float().div(127.5).sub(1)
    save_row(x, tmp_path / "r.png")
    y = load_row(tmp_path / "r.png", 16)
    assert y.shape == x.shape and torch.equal(y, x)


def test_bar_chart_bar_heights(tmp_path):
    means = [1.0, 0.5, 0.25]
    entries = [{"label": f"m{i}", "mean": m, "std": None, "values": []} for i, m in enumerate(means)]
    bar_chart(entries, tmp_path / "c.png", "t")
    img = np.asarray(Image.open(tmp_path / "c.png").convert("RGB")).astype(int)
    blue = (np.abs(img - np.array([70, 110, 180])).sum(axis=2) == 0)
    cols = np.flatnonzero(blue.any(axis=0))
    groups = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
    assert len(groups) == 3
    heights = [blue[:, g[len(g) // 2]].sum() for g in groups]
    assert heights[0] == pytest.approx(300, abs=2)  # the plot is 300 px tall
    assert heights[1] / heights[0] == pytest.approx(0.5, abs=0.01)
    assert heights[2] / heights[0] == pytest.approx(0.25, abs=0.01)


# ------------------------------------------------------------------------------------ whole runs (slow)
def _run_cli(args: list[str]) -> int:
    from multifeat.cli import main

    return main(["bench", *args])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, immature_bank_16):
    out = tmp_path_factory.mktemp("bench") / "out"
    cache = out.parent / "cache"
    immature_bank_16(cache)
    code = _run_cli(["--smoke", "--out", str(out), "--cache-dir", str(cache)])
    assert code == 0
    return out, cache


@pytest.mark.slow
def test_smoke_run_writes_consistent_report(smoke_run, capsys):
    out, _ = smoke_run
    res = json.loads((out / "results.json").read_text())
    cfg = B.load_config(None, preset="smoke")
    assert res["seeds"] == cfg["seeds"] == [0, 1]
    assert list(res["methods"]) == [m.id for m in METHODS]
    for key in ("cpu_model", "cpu_cores", "torch"):
        assert res["hardware"][key]
    assert res["run"]["wall_seconds"] > 0 and res["run"]["cpu_seconds"] > 0
    assert res["evaluator"]["seed"] == 10000 and res["config"]["eval"]["real_seed"] == 20000
    assert set(res["evaluator"]["val_accuracy"]) == {"bald", "beard", "eyeglasses", "smiling"}
    assert res["extractor"]
    md = (out / "results.md").read_text()
    for m in METHODS:
        recs = [json.loads((out / "runs" / m.id / f"seed{s}.json").read_text()) for s in (0, 1)]
        summary = res["methods"][m.id]["summary"]
        # the per-seed numbers are the records', and mean/std are recomputed here by hand
        for name, get in (("joint_rate", lambda r: r["joint"]["rate"]), ("feature_1_rate", lambda r: r["feature_rates"]["bald"]["rate"]),
                          ("feature_2_rate", lambda r: r["feature_rates"]["beard"]["rate"]), ("fid", lambda r: r["fid"]),
                          ("train_seconds", lambda r: r["train_seconds"])):
            vals = [get(r) for r in recs]
            mean = sum(vals) / 2
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (2 - 1))
            assert summary[name]["mean"] == pytest.approx(mean, abs=1e-12)
            assert summary[name]["std"] == pytest.approx(std, abs=1e-12)
            assert summary[name]["values"] == vals
        for r in recs:
            j = r["joint"]
            assert j["rate"] == j["count"] / j["n"] and j["n"] == cfg["eval"]["n"]
            lo, hi = j["ci95"]
            assert 0 <= lo <= j["rate"] <= hi <= 1
            assert r["sees_joint_images"] == (m.key == "g")
            for counts in r["training_sets"].values():
                if m.key == "g":
                    assert counts["joint"] == counts["images"] > 0
                else:
                    assert counts["joint"] == 0 and counts["labelled"] > 0
        # the markdown row shows the recomputed joint rate mean ± std
        jr = [r["joint"]["rate"] for r in recs]
        mean = sum(jr) / 2
        std = abs(jr[0] - jr[1]) / math.sqrt(2)
        row = next(line for line in md.splitlines() if line.startswith(f"| ({m.key}) "))
        assert f"{100 * mean:.1f} ± {100 * std:.1f} %" in row
        # one grid per method: a row per seed of grid_per_seed images (16 px upscaled 4x, 2 px padding)
        grid = Image.open(out / "grids" / f"{m.id}.png")
        k, s, up = cfg["eval"]["grid_per_seed"], 16, 4
        assert grid.size == (k * (s + 2) * up + 2 * up, 2 * (s + 2) * up + 2 * up)
    assert res["guard"]["joint_images_found"] == 0 and res["guard"]["training_sets_checked"] > 0
    chart = Image.open(out / "joint_rate.png")
    assert chart.format == "PNG" and chart.size[0] > 7 * 56
    assert (out / "grids" / "montage.png").is_file()
    # b, c and d of a seed share phases 1 and 2 (trained once, in the pipeline's layout); phase 3 per variant
    shared = out / "work" / "seed0" / "method_a"
    done = {p: json.loads((shared / p / "done.json").read_text()) for p in ("phase1", "phase2")}
    assert all((shared / p / "checkpoints" / "final.ckpt").is_file() for p in done)
    for key in ("b-method-a-no-d2", "c-method-a", "d-method-a-adain"):
        rec = res["methods"][key]["runs"]["0"]
        assert rec["shared_seconds"] == pytest.approx(done["phase1"]["seconds"] + done["phase2"]["seconds"], abs=0.11)
        assert rec["extra"]["shared_reused"] is (key != "b-method-a-no-d2")
        phase3 = json.loads((out / "work" / "seed0" / key / "done.json").read_text())
        assert phase3["phase"] == "phase3" and phase3["joint_free"]["joint"] == 0
        assert (out / "work" / "seed0" / key / "checkpoints" / "final.ckpt").is_file()
    assert res["methods"]["b-method-a-no-d2"]["runs"]["0"]["extra"]["alpha"][2] == 0.0
    assert res["methods"]["d-method-a-adain"]["runs"]["0"]["extra"]["adain_active"] is True
    assert res["methods"]["c-method-a"]["runs"]["0"]["extra"]["adain_active"] is False


@pytest.mark.slow
def test_smoke_run_resumes_and_refuses_other_settings(smoke_run, capsys):
    out, cache = smoke_run
    before = {p: p.read_bytes() for p in (out / "runs").rglob("*.json")}
    capsys.readouterr()
    assert _run_cli(["--smoke", "--out", str(out), "--cache-dir", str(cache), "--methods", "a,g"]) == 0
    printed = capsys.readouterr().out
    steps = B.load_config(None, preset="smoke")["gan"]["steps"]
    assert f"--smoke: the GANs trained {steps} steps" in printed and "are not results of the methods" in printed
    lines = [ln for ln in printed.splitlines() if ln.startswith("[bench] (")]
    assert len(lines) == 4 and all("done earlier, skipped" in ln and "elapsed" in ln for ln in lines)
    assert {p: p.read_bytes() for p in (out / "runs").rglob("*.json")} == before
    res = json.loads((out / "results.json").read_text())
    assert list(res["methods"]) == ["a-beard-gan", "g-joint-gan"] and res["run"]["runs_done_now"] == 0
    # other settings into the same folder: refused with a message naming the record
    assert _run_cli(["--smoke", "--out", str(out), "--cache-dir", str(cache), "--methods", "a", "--set", "gan.steps=5"]) == 2
    assert "other benchmark settings" in capsys.readouterr().err
    # --overwrite redoes the selected run only
    assert _run_cli(["--smoke", "--out", str(out), "--cache-dir", str(cache), "--methods", "a", "--seeds", "1",
                     "--overwrite"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[bench] (")]
    assert len(lines) == 1 and "skipped" not in lines[0] and "a-beard-gan seed 1" in lines[0]
    assert (out / "runs" / "a-beard-gan" / "seed0.json").read_bytes() == before[out / "runs" / "a-beard-gan" / "seed0.json"]


@pytest.mark.slow
def test_celeba_config_on_a_fixture_tree(tmp_path, repo_root):
    info = make_celeba(tmp_path / "data", n=240, partition=True, seed=1, size=(20, 24))
    bald, beard = _celeba_truth(info)
    test = np.array(info["parts"]) == 2   # method e's held-out targets come from the test split
    assert (bald & beard).sum() > 0 and (bald & ~beard).sum() >= 8 and (beard & ~bald).sum() >= 8
    assert (bald & ~beard & test).sum() >= 2 and (beard & ~bald & test).sum() >= 2
    out = tmp_path / "out"
    code = _run_cli(["--config", str(repo_root / "experiments" / "celeba" / "bench.yaml"), "--smoke", "--out", str(out),
                     "--set", f"data.root={tmp_path / 'data'}", "--set", "data.num_workers=0", "--set", "data.batch_size=8",
                     "--set", "precision=null", "--set", "method_b.distance=pixel-gradient", "--set", "method_b.search=cutoffs",
                     "--set", "eval.n=12", "--set", "eval.n_real=12", "--seeds", "0,1"])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["data"]["source"] == "celeba" and res["config"]["method_b"]["styles"] == "projected"
    assert "CelebA" in res["real"]["description"]
    assert Path(res["evaluator"]["path"]).parent == out / "work" / "evaluator"
    for m in METHODS:
        for s in ("0", "1"):
            rec = res["methods"][m.id]["runs"][s]
            for name, counts in rec["training_sets"].items():
                assert (counts["joint"] > 0) == (m.key == "g"), (m.id, name, counts)
    # e and f train on "all faces": the joint-free module removed the joint ones, so fewer than all
    n_all_train = res["methods"]["f-cgan"]["runs"]["0"]["training_sets"]["train"]["images"]
    assert 0 < n_all_train < len(info["files"])
    assert (out / "grids" / "e-method-b.png").is_file() and (out / "joint_rate.png").is_file()
    # method e projected held-out targets of the test split only, none of them joint
    for s in ("0", "1"):
        targets = res["methods"]["e-method-b"]["runs"][s]["extra"]["targets"]
        assert targets["split"] == "celeba test"
        assert targets["a"]["guard"] == {"images": int((bald & ~beard & test).sum()), "labelled": int((bald & ~beard & test).sum()),
                                         "joint": 0, "generated": 0}
        assert targets["b"]["guard"]["images"] == int((beard & ~bald & test).sum()) and targets["b"]["guard"]["joint"] == 0


def test_dcgan_section_turns_on_ada_and_ema_rampup_for_every_dcgan():
    """`gan.augment` / `gan.ema_rampup` reach the DCGAN the benchmark builds (off in the default protocol)."""
    from types import SimpleNamespace

    from multifeat.bench.methods import _dcgan

    cfg = B.load_config(None, preset="smoke")
    ctx = SimpleNamespace(config=cfg, image_size=int(cfg["image_size"]))
    plain = _dcgan(ctx)
    assert plain.hparams.augment is None and plain.hparams.ema_rampup is None and plain.augment_pipe is None
    cfg["gan"].update(augment="bgc", ema_rampup=0.05, ema_decay=0.99)
    tuned = _dcgan(ctx)
    assert tuned.hparams.augment == "bgc" and tuned.hparams.ema_rampup == 0.05
    assert tuned.augment_pipe is not None and tuned.ada is not None


@pytest.mark.slow
def test_a_second_run_compared_with_the_first(smoke_run, tmp_path, capsys):
    """`--compare`: the smoke run's records re-reported with one thread and then with two (two folders,
    so that the other smoke tests' changes to the original do not matter) agree on every row."""
    import shutil

    out, cache = smoke_run
    first, second = tmp_path / "first", tmp_path / "second"
    for d in (first, second):
        shutil.copytree(out / "runs", d / "runs")
        shutil.copytree(out / "work", d / "work")
    threads = torch.get_num_threads()  # --threads sets the process's count: give the next tests theirs back
    try:
        assert _run_cli(["--smoke", "--out", str(first), "--cache-dir", str(cache), "--methods", "a,g", "--threads", "1"]) == 0
        capsys.readouterr()
        assert _run_cli(["--smoke", "--out", str(second), "--cache-dir", str(cache), "--methods", "a,g", "--threads", "2",
                         "--compare", str(first)]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    cmp = json.loads((second / "agreement.json").read_text())
    assert cmp["second"]["path"] == str(first / "results.json")
    assert (cmp["first"]["threads"], cmp["second"]["threads"]) == (2, 1)
    assert {r["method"] for r in cmp["rows"]} == {"a-beard-gan", "g-joint-gan"}
    assert cmp["rows_checked"] == 8 and cmp["all_agree"] is True
    assert all(r["identical_joint_seeds"] == r["seeds_in_common"] == 2 for r in cmp["rows"])
    assert f"8 of 8 rows agree (each mean inside the other's 95 % interval): {second / 'agreement.md'}" in printed


def test_celeba_phase3_epochs_hold_num_samples_images(tmp_path):
    """CelebA stages hold every matching face; phase 3's epochs are capped at num_samples images (as
    SyntheticFaces renders them), so the beard and bald epochs have the protocol's length."""
    from multifeat.bench.methods import method_a_config

    cfg = B.load_config(None, overrides=["method_a.phase3.num_samples=200", "data.batch_size=32"])
    synth = method_a_config(Context(cfg, FEATURES, log=lambda m: None), 0, "c")["phase3"]["trainer"]
    assert synth == {"max_epochs": cfg["method_a"]["phase3"]["epochs"]}  # rendered sets have the size already
    cfg["data"].update(source="celeba", root=str(tmp_path), derived=None)
    ctx = Context(cfg, FEATURES, log=lambda m: None)
    assert method_a_config(ctx, 0, "c")["phase3"]["trainer"]["limit_train_batches"] == 6  # 200 // 32
    cfg["method_a"]["phase3"]["num_samples"] = 20
    with pytest.raises(ConfigError, match=r"method_a\.phase3\.num_samples \(20\).*batch_size 32"):
        method_a_config(ctx, 0, "c")


def test_preset_notice_names_the_preset_and_its_lengths():
    from multifeat.commands.bench import preset_notice

    cfg = B.load_config(None, preset="quick")
    line = preset_notice("quick", cfg)
    assert line.startswith(f"--quick: the GANs trained {cfg['gan']['steps']} steps (StyleGAN2 {cfg['method_b']['stylegan']['steps']})")
    assert "not results" in line
    assert preset_notice(None, B.load_config(None)) is None


def test_a_missing_lpips_distance_stops_method_e_before_anything_trains(tmp_path, monkeypatch):
    """LPIPS weights are never downloaded: without them a run that includes method e stops at once,
    naming the key, instead of after the judge and the other methods have trained."""
    from multifeat.bench.runner import run_benchmark
    from multifeat.mixing.distance import LPIPSWeightsMissingError

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no VGG16 file there
    cfg = B.load_config(None, preset="smoke", overrides=["method_b.distance=lpips"])
    out = tmp_path / "out"
    with pytest.raises(LPIPSWeightsMissingError, match=r"method_b\.distance is 'lpips'.*nothing was trained(.|\n)*"
                                                          r"--set method_b\.distance=pixel"):
        run_benchmark(cfg, out, methods="a,e", seeds=[0])
    assert not (out / "work").exists() and not (out / "runs").exists()
