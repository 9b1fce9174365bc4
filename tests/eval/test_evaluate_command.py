"""`multifeat evaluate` end to end on small folders the tests write."""

import json
from pathlib import Path

import pytest

from multifeat.cli import main as cli_main
from multifeat.data import SyntheticFaces
from multifeat.utils.images import save_image


def _write_faces(folder: Path, n: int, size: int, seed: int, require=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ds = SyntheticFaces(num_samples=n, image_size=size, seed=seed, require=require)
    for it in ds.__getitems__(list(range(n))):
        save_image(it["image"], folder / f"{it['index']:04d}.png")
    return folder


def test_evaluate_images_folder_end_to_end(tmp_path, quick_evaluator_ckpt, capsys):
    imgs = _write_faces(tmp_path / "imgs", 12, 16, seed=77)
    out = tmp_path / "out"
    rc = cli_main(["evaluate", "--images", str(imgs), "--features", "bald,beard", "--evaluator", str(quick_evaluator_ckpt),
                   "--n", "10", "--n-real", "8", "--out", str(out), "--kid-subsets", "2"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 10 and m["features"] == ["bald", "beard"] and m["real"]["n"] == 8
    assert m["extractor"].startswith("evaluator") and m["fid"] is not None and m["kid_mean"] is not None
    assert set(m["evaluator"]["val_accuracy"]) == {"bald", "beard", "eyeglasses", "smiling"}
    assert 0 <= m["joint"]["count"] <= min(m["feature_rates"]["bald"]["count"], m["feature_rates"]["beard"]["count"])
    assert (out / "samples.png").is_file()
    report = (out / "report.md").read_text()
    assert "joint" in report and m["extractor"] in report
    printed = capsys.readouterr().out
    assert "metrics.json" in printed and "| set |" in printed


def test_evaluate_with_identity_restorer_compares_both(tmp_path, quick_evaluator_ckpt):
    pytest.importorskip("multifeat.restore")
    imgs = _write_faces(tmp_path / "imgs", 6, 16, seed=78)
    out = tmp_path / "out"
    rc = cli_main(["evaluate", "--images", str(imgs), "--features", "smiling", "--evaluator", str(quick_evaluator_ckpt),
                   "--real", "none", "--out", str(out), "--restore", "identity"])
    assert rc == 0
    raw = json.loads((out / "metrics.json").read_text())
    restored = json.loads((out / "restored" / "metrics.json").read_text())
    # the identity restorer changes nothing, so both sets measure the same
    assert raw["feature_rates"] == restored["feature_rates"] and raw["label"] == "raw"
    assert raw["compare"][0]["label"].startswith("restored")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--features", "bald,wings"], "valid names: bald, beard, eyeglasses, smiling"),
        (["--images", "{tmp}/missing"], "missing"),
        (["--evaluator", "{tmp}/none.ckpt"], "none.ckpt"),
        (["--real", "{tmp}/no_real"], "no_real"),
    ],
)
def test_bad_input_exits_nonzero_with_message(tmp_path, quick_evaluator_ckpt, capsys, args, message):
    imgs = _write_faces(tmp_path / "imgs", 3, 16, seed=79)
    argv = ["evaluate", "--images", str(imgs), "--evaluator", str(quick_evaluator_ckpt), "--out", str(tmp_path / "o")]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert cli_main(argv) != 0
    assert message in capsys.readouterr().err


def test_wandb_offline_table_row(tmp_path, quick_evaluator_ckpt, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    imgs = _write_faces(tmp_path / "imgs", 6, 16, seed=80)
    out = tmp_path / "out"
    rc = cli_main(["evaluate", "--images", str(imgs), "--features", "bald,beard", "--evaluator", str(quick_evaluator_ckpt),
                   "--n-real", "6", "--kid-subsets", "2", "--out", str(out), "--logger", "wandb", "--wandb-group", "g1"])
    assert rc == 0
    tables = list((out / "wandb").glob("offline-run-*/files/media/table/**/*.table.json"))
    assert tables, sorted(str(p) for p in (out / "wandb").rglob("*"))[:50]
    table = json.loads(tables[0].read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    for col in ("label", "n", "joint_rate", "joint_ci_low", "joint_ci_high", "rate_bald", "rate_beard", "fid", "kid_mean",
                "extractor", "diversity_ratio"):
        assert col in table["columns"], table["columns"]
    row = dict(zip(table["columns"], table["data"][0]))
    assert row["n"] == 6 and row["joint_rate"] == pytest.approx(metrics["joint"]["rate"])
    assert row["extractor"] == metrics["extractor"]


def test_evaluate_generator_checkpoint(tmp_path, quick_evaluator_ckpt):
    from lightning.pytorch import Trainer

    from multifeat.eval.evaluate import evaluate_generator
    from multifeat.eval.evaluator import load_evaluator
    from multifeat.phases.phase1 import Phase1GAN

    gen = Phase1GAN(image_size=16, z_dim=8, g_width=8, d_width=8, max_width=16, num_fixed=4)
    t = Trainer(max_epochs=0, logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    t.strategy.connect(gen)
    t.save_checkpoint(str(tmp_path / "g.ckpt"))
    out = tmp_path / "out"
    rc = cli_main(["evaluate", "--generator", str(tmp_path / "g.ckpt"), "--features", "bald", "--n", "10", "--batch-size", "4",
                   "--seed", "3", "--evaluator", str(quick_evaluator_ckpt), "--n-real", "6", "--kid-subsets", "2",
                   "--out", str(out)])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    direct = evaluate_generator(gen.eval().sample, n=10, features=("bald",), evaluator=load_evaluator(quick_evaluator_ckpt),
                                seed=3, batch_size=4)
    assert m["n"] == 10 and m["feature_rates"]["bald"]["count"] == direct["feature_rates"]["bald"]["count"]
    assert m["diversity"]["generated"] == pytest.approx(direct["diversity"]["generated"], rel=1e-5)
    assert m["source"].startswith("generator")


def test_usage_error_returns_code(capsys):
    assert cli_main(["evaluate", "--features", "bald"]) == 2  # neither --generator nor --images
    assert "one of the arguments --generator --images is required" in capsys.readouterr().err


def test_without_evaluator_trains_and_caches_one(tmp_path, quick_evaluator_ckpt, monkeypatch, capsys):
    import shutil

    import multifeat.eval.evaluator_cache as ae

    trained = []

    def fake_train(**kw):  # stands in for the minutes-long training; the cache logic is what is tested
        trained.append(kw)
        shutil.copy(quick_evaluator_ckpt, kw["out_path"])
        return kw["out_path"]

    monkeypatch.setattr(ae, "train_evaluator", fake_train)
    imgs = _write_faces(tmp_path / "imgs", 4, 16, seed=81)
    argv = ["evaluate", "--images", str(imgs), "--features", "beard", "--real", "none", "--cache-dir", str(tmp_path / "cache")]
    assert cli_main([*argv, "--out", str(tmp_path / "o1")]) == 0
    assert cli_main([*argv, "--out", str(tmp_path / "o2")]) == 0
    assert len(trained) == 1 and trained[0]["image_size"] == 16 and trained[0]["seed"] == 10_000
    m = json.loads((tmp_path / "o2" / "metrics.json").read_text())
    assert m["evaluator"]["path"].startswith(str(tmp_path / "cache"))


def test_evaluator_saved_under_the_old_module_path_still_loads(tmp_path, quick_evaluator_ckpt):
    """Evaluators trained before the judge moved to multifeat.eval record the class
    ``multifeat.phases.attribute_evaluator.AttributeEvaluator``; loading goes by that record."""
    import torch

    from multifeat.eval.evaluator import AttributeEvaluator, load_evaluator

    ckpt = torch.load(quick_evaluator_ckpt, weights_only=True)
    assert ckpt["multifeat"]["class_path"] == "multifeat.eval.evaluator.AttributeEvaluator"
    ckpt["multifeat"]["class_path"] = "multifeat.phases.attribute_evaluator.AttributeEvaluator"
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    ev = load_evaluator(old)
    assert isinstance(ev, AttributeEvaluator)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(ev.predict_proba(x), load_evaluator(quick_evaluator_ckpt).predict_proba(x))
    imgs = _write_faces(tmp_path / "imgs", 4, 16, seed=81)
    out = tmp_path / "out"
    assert cli_main(["evaluate", "--images", str(imgs), "--features", "bald", "--evaluator", str(old), "--real", "none",
                     "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["evaluator"]["path"] == str(old)
