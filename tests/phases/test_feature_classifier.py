"""Phase 2 (D2): loss, per-source metrics against a plain reference, checkpoints, Phase 1 -> 2 via the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset

from multifeat.cli import main as cli_main
from multifeat.data import SOURCE_NAMES, FeatureClassifierDataModule
from multifeat.errors import ConfigError
from multifeat.io.bank import BankWriter, read_bank
from multifeat.io.checkpoints import load_checkpoint, load_phase_module
from multifeat.phases import FeatureClassifier, Phase1GAN
from multifeat.phases.feature_classifier import SOURCE_NAMES as D2_SOURCES

REPO = Path(__file__).resolve().parents[2]
TINY = dict(image_size=16, width=4, max_width=16)


def test_source_names_match_the_data_layer():
    assert D2_SOURCES == tuple(SOURCE_NAMES)


def test_forward_is_a_probability_and_predict_proba_restores_mode():
    model = FeatureClassifier(**TINY).train()
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    p = model(x)
    assert p.shape == (5,)
    torch.testing.assert_close(p, torch.sigmoid(model.logits(x)).reshape(5))  # the probability of the logit
    q = model.predict_proba(x, batch_size=2)
    assert q.shape == (5,) and model.training
    model.eval()
    torch.testing.assert_close(q, model(x))
    assert FeatureClassifier(**TINY).predict_proba(torch.zeros(0, 3, 16, 16)).shape == (0,)


def test_loss_is_the_papers_squared_error_or_bce():
    model = FeatureClassifier(**TINY)
    p = torch.tensor([0.9, 0.2, 0.6, 0.1, 0.3])
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    # by hand: positives 0.9, 0.6 -> ((0.1)^2 + (0.4)^2)/2 = 0.085; negatives 0.2, 0.1, 0.3 -> (0.04+0.01+0.09)/3
    torch.testing.assert_close(model.loss(p, y), torch.tensor(0.085 + 0.14 / 3))
    bce = FeatureClassifier(**TINY, loss="bce")
    expected = -(np.log(0.9) + np.log(0.6)) / 2 - (np.log(0.8) + np.log(0.9) + np.log(0.7)) / 3
    torch.testing.assert_close(bce.loss(p, y), torch.tensor(expected, dtype=torch.float32), rtol=1e-4, atol=1e-5)
    # a batch with one class only: the other term vanishes instead of becoming NaN
    torch.testing.assert_close(model.loss(p[:1], y[:1]), torch.tensor(0.01))
    torch.testing.assert_close(model.loss(p[1:2], y[1:2]), torch.tensor(0.04))


class MeanPixel(nn.Module):
    """A fixed 'classifier': logit = 8 * mean pixel value (so the probabilities are known)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return (8 * x.mean(dim=(1, 2, 3)) + 0 * self.dummy)[:, None]


class Items(Dataset):
    def __init__(self, levels, sources):
        self.levels, self.sources = levels, sources

    def __len__(self):
        return len(self.levels)

    def __getitem__(self, i):
        s = self.sources[i]
        return {"image": torch.full((3, 16, 16), float(self.levels[i])), "label": torch.tensor(float(s == 0)),
                "source": torch.tensor(s)}


def _auroc(pos, neg):
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def test_validation_metrics_overall_and_per_source_match_a_plain_computation(tmp_path):
    rng = np.random.default_rng(0)
    sources = np.array([0] * 20 + [1] * 12 + [2] * 9 + [3] * 7)
    centre = {0: 0.25, 1: -0.2, 2: -0.05, 3: 0.1}
    levels = np.array([centre[s] + rng.normal(0, 0.15) for s in sources])
    rng.shuffle(perm := np.arange(len(sources)))
    sources, levels = sources[perm], levels[perm]
    model = FeatureClassifier(**TINY, classifier=MeanPixel())
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    loader = DataLoader(Items(levels, sources.tolist()), batch_size=8)
    (metrics,) = trainer.validate(model, loader, verbose=False)
    p = 1 / (1 + np.exp(-8 * levels))
    pred = p > 0.5
    pos = sources == 0
    assert metrics["val/acc"] == pytest.approx(float((pred == pos).mean()), abs=1e-6)
    assert metrics["val/auroc"] == pytest.approx(_auroc(p[pos], p[~pos]), abs=1e-5)
    assert metrics["val/acc/positive"] == pytest.approx(float(pred[pos].mean()), abs=1e-6)
    for sid, name in enumerate(SOURCE_NAMES[1:], start=1):
        sel = sources == sid
        assert metrics[f"val/acc/{name}"] == pytest.approx(float((~pred[sel]).mean()), abs=1e-6), name
        assert metrics[f"val/auroc/{name}"] == pytest.approx(_auroc(p[pos], p[sel]), abs=1e-5), name
    # the sources really differ (the per-source figures are not all the same number)
    assert len({round(metrics[f"val/acc/{n}"], 4) for n in SOURCE_NAMES[1:]}) > 1
    # a source absent from validation is not logged
    keep = sources != 2
    (metrics,) = trainer.validate(model, DataLoader(Items(levels[keep], sources[keep].tolist()), batch_size=8), verbose=False)
    assert "val/acc/bank" not in metrics and "val/auroc/bank" not in metrics and "val/acc/degraded" in metrics
    # positives only (e.g. the sanity check's first batches): accuracies, but no AUROC of one class
    only = sources == 0
    (metrics,) = trainer.validate(model, DataLoader(Items(levels[only], sources[only].tolist()), batch_size=8), verbose=False)
    assert metrics["val/acc/positive"] == pytest.approx(float(pred[pos].mean()), abs=1e-6)
    assert not [k for k in metrics if "auroc" in k]


def _tiny_bank(root, n=12):
    writer = BankWriter(root)
    g = torch.Generator().manual_seed(1)
    for step in range(0, n, 4):
        writer.add(torch.rand(4, 3, 16, 16, generator=g) * 2 - 1, epoch=0, step=step)
    return root


def test_trains_and_reloads_with_load_from_checkpoint(tmp_path):
    bank = _tiny_bank(tmp_path / "bank")
    dm = FeatureClassifierDataModule(feature="bald", image_size=16, bank_dir=str(bank), num_samples=48, batch_size=16,
                                     val_fraction=0.25)
    model = FeatureClassifier(**TINY, feature="bald", lr=1e-2)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, callbacks=[ckpt], log_every_n_steps=1)
    trainer.fit(model, dm)
    logged = trainer.logged_metrics
    for key in ("loss/train", "loss/val", "val/acc", "val/auroc", "val/acc/positive", "val/acc/real_negative",
                "val/acc/bank", "val/acc/degraded", "val/auroc/bank"):
        assert key in logged, key
    path = tmp_path / "ckpt" / "last.ckpt"
    meta = load_checkpoint(path, expect_phase="phase2")["multifeat"]
    assert meta["image_size"] == 16 and meta["feature"] == "bald"
    loaded = FeatureClassifier.load_from_checkpoint(path)
    assert loaded.hparams.image_size == 16 and loaded.hparams.feature == "bald"
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(loaded.predict_proba(x), model.predict_proba(x))
    generic = load_phase_module(path, expect_phase="phase2")
    torch.testing.assert_close(generic.predict_proba(x), model.predict_proba(x))


@pytest.mark.parametrize("kwargs", [dict(loss="hinge"), dict(lr=0), dict(lr_schedule="step"), dict(threshold=1.0), dict(image_size=20),
                                    dict(source_names=("real_negative", "positive"))])
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        FeatureClassifier(**{**TINY, **kwargs})


# ------------------------------------------------------------------------------------------- CLI
def _tiny_config(name: str, out: Path, edit) -> Path:
    cfg = yaml.safe_load((REPO / "experiments" / f"{name}.yaml").read_text())
    edit(cfg)
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _tiny_phase1(cfg, logger=False):
    t = cfg["trainer"]
    t.update(max_steps=6, enable_progress_bar=False, enable_model_summary=False)
    if logger is False:
        t["logger"] = False
    cfg["model"]["init_args"].update(image_size=16, z_dim=8, g_width=4, d_width=4, max_width=16)
    cfg["data"]["init_args"].update(image_size=16, num_samples=64, batch_size=16)
    for cb in t["callbacks"]:
        if cb["class_path"].endswith("NegativeBank"):
            cb["init_args"].update(every_n_steps=2, per_save=5, first_steps=6, max_images=12)
        if cb["class_path"].endswith("SampleGrid"):
            cb["init_args"].update(every_n_steps=3)


def _tiny_phase2(cfg):
    cfg["trainer"].update(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    cfg["model"]["init_args"].update(image_size=16, width=4, max_width=16)
    cfg["data"]["init_args"].update(image_size=16, num_samples=48, batch_size=16)


def test_phase1_then_phase2_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    p1 = _tiny_config("phase1", tmp_path, _tiny_phase1)
    p2 = _tiny_config("phase2", tmp_path, _tiny_phase2)
    # phase 2 first: the missing bank is reported with its path, no traceback
    assert cli_main(["fit", "--config", str(p2)]) == 2
    assert "negative bank folder 'runs/phase1/negatives' does not exist" in capsys.readouterr().err

    assert cli_main(["fit", "--config", str(p1)]) == 0
    # steps 0, 2, 4 with 5 images each, capped at max_images=12
    entries = read_bank("runs/phase1/negatives")
    assert len(entries) == 12 and [e["step"] for e in entries] == [0] * 5 + [2] * 5 + [4] * 2
    assert len(list(Path("runs/phase1/negatives").glob("*.png"))) == 12
    assert {"latest.png", "step_00000003.png", "step_00000006.png"} <= set(os.listdir("runs/phase1/samples"))
    g1 = load_phase_module("runs/phase1/checkpoints/last.ckpt", expect_phase="phase1")
    assert isinstance(g1, Phase1GAN) and g1.sample(2, seed=0).shape == (2, 3, 16, 16)

    assert cli_main(["fit", "--config", str(p2)]) == 0
    d2 = FeatureClassifier.load_from_checkpoint("runs/phase2/checkpoints/last.ckpt")
    assert d2.hparams.image_size == 16 and d2.hparams.feature == "bald"
    assert d2.predict_proba(g1.sample(3, seed=1)).shape == (3,)


def test_phase2_reports_an_empty_bank_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("runs/phase1/negatives").mkdir(parents=True)
    p2 = _tiny_config("phase2", tmp_path, _tiny_phase2)
    assert cli_main(["fit", "--config", str(p2)]) == 2
    assert "negative bank folder 'runs/phase1/negatives' is empty" in capsys.readouterr().err


@pytest.mark.parametrize("config", ["phase1", "phase2", "celeba/phase1", "celeba/phase2"])
def test_configs_print(config, capsys):
    assert cli_main(["fit", "--config", str(REPO / "experiments" / f"{config}.yaml"), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("multifeat.phases.")


# ------------------------------------------------------------------------------------------- accuracy
@pytest.mark.slow
def test_d2_rejects_every_negative_source_on_synthetic_faces(tmp_path, capsys):
    """The figure recorded in docs/method_a.md: a short real Phase-1 run makes the bank, then D2 at
    32 px must reach >= 95 % validation accuracy on positives and on EACH negative source."""
    import time

    from multifeat.callbacks import NegativeBank
    from multifeat.data import AttributeDataModule

    t0 = time.perf_counter()
    L.seed_everything(0)
    bank = tmp_path / "negatives"
    g1 = Phase1GAN(image_size=32, z_dim=32, g_width=16, d_width=16, max_width=64)
    L.Trainer(max_steps=40, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              limit_val_batches=0, default_root_dir=tmp_path,
              callbacks=[NegativeBank(bank_dir=str(bank), first_steps=40, every_n_steps=4, per_save=16, max_images=160)]
              ).fit(g1, AttributeDataModule(image_size=32, require={"bald": True}, num_samples=512, batch_size=32,
                                            val_fraction=0.0))
    assert len(read_bank(bank)) == 160
    t1 = time.perf_counter()
    dm = FeatureClassifierDataModule(feature="bald", image_size=32, bank_dir=str(bank), num_samples=1024, batch_size=64,
                                     val_fraction=0.1, epoch_size=2048, synthetic={"cache": True})
    d2 = FeatureClassifier(image_size=32, feature="bald", width=16, max_width=64, lr=2e-3, loss="mse", lr_schedule="cosine")
    trainer = L.Trainer(max_epochs=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(d2, dm)
    t2 = time.perf_counter()
    m = {k: float(v) for k, v in trainer.logged_metrics.items() if k.startswith("val/")}
    with capsys.disabled():
        print(f"\nD2 validation ({dm.source_counts('val')}): " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(m.items())))
        print(f"phase 1 (bank): {t1 - t0:.0f} s, phase 2: {t2 - t1:.0f} s")
    for source in SOURCE_NAMES:
        assert m[f"val/acc/{source}"] >= 0.95, (source, m)
