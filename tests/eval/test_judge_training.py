"""The judge's training additions: immature-generator negatives (masked loss), balanced loss weights,
and `multifeat test` on a CelebA-like tree (balanced accuracy and AUROC per attribute, by hand)."""

import csv
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from multifeat.errors import ConfigError
from multifeat.eval.evaluator import AttributeEvaluator
from multifeat.eval.immature import ImmatureBank, immature_batch
from multifeat.eval.judge_data import auroc_per_column
from multifeat.eval.metrics import wilson_interval


def _bank(lacks):
    n = len(lacks)
    images = torch.arange(n * 3 * 16 * 16, dtype=torch.int64).reshape(n, 3, 16, 16).remainder(256).to(torch.uint8)
    return ImmatureBank(images, list(lacks), [10] * n)


def test_immature_batch_is_a_negative_of_the_missing_feature_only():
    bank = _bank(["beard", "bald", "beard", "wings"])
    g = torch.Generator().manual_seed(3)
    x, y, mask = immature_batch(bank, 12, ["bald", "beard", "smiling"], g)
    idx = torch.randint(0, 4, (12,), generator=torch.Generator().manual_seed(3))  # the same draws
    assert x.shape == (12, 3, 16, 16) and torch.equal(y, torch.zeros(12, 3))
    torch.testing.assert_close(x, bank.images[idx].float() / 127.5 - 1)
    for row, i in enumerate(idx.tolist()):
        want = {"bald": [1.0, 0, 0], "beard": [0, 1.0, 0], "wings": [0, 0, 0]}[bank.lacks[i]]
        assert mask[row].tolist() == want, (row, bank.lacks[i])


def test_training_step_masks_the_unknown_attributes(monkeypatch):
    import multifeat.eval.evaluator as E

    torch.manual_seed(0)
    m = AttributeEvaluator(image_size=16, attributes=("bald", "beard"), width=4, max_width=8, robust=True, degrade_prob=0.0,
                           nonface_fraction=0.0, immature_fraction=0.5)
    m.immature_in_use, m._immature = 0.5, _bank(["beard"])
    xi = torch.rand(2, 3, 16, 16) * 2 - 1
    mi = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    monkeypatch.setattr(E, "immature_batch", lambda bank, n, attributes: (xi[:n], torch.zeros(n, 2), mi[:n]))
    monkeypatch.setattr(m, "log", lambda *a, **k: None)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    loss = m.training_step({"image": x, "attrs": y}, 0)
    logits = m(torch.cat([x, xi]))
    per = F.binary_cross_entropy_with_logits(logits, torch.cat([y, torch.zeros(2, 2)]), reduction="none")
    # 8 labelled terms, plus beard of the first generator sample and bald of the second: 10 terms
    expected = (per[:4].sum() + per[4, 1] + per[5, 0]) / 10
    torch.testing.assert_close(loss, expected)


def test_auroc_by_pairs():
    probs = torch.tensor([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4], [0.6, 0.9], [0.3, 0.4]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # column 0: positives 0.9, 0.6, 0.3 against negatives 0.1, 0.6 -> pairs won 2 + 1.5 + 1 = 4.5 of 6
    # column 1: positives 0.9, 0.4 against negatives 0.2, 0.7, 0.4 -> 3 + (1 + 0 + 0.5) = 4.5 of 6
    assert auroc_per_column(probs, targets) == pytest.approx([0.75, 0.75])
    assert np.isnan(auroc_per_column(probs, torch.ones(5, 2))[0])


COLUMNS = ("Bald", "Goatee", "Male", "Mustache", "No_Beard", "Eyeglasses", "Smiling")


def _celeba_tree(root: Path, n: int = 30, seed: int = 0) -> dict:
    """``root/celeba`` with ``n`` 16 px JPEGs (random colour fields), labels and a partition (i % 3)."""
    rng = np.random.default_rng(seed)
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    values = rng.choice([-1, 1], size=(n, len(COLUMNS)))
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    for f in files:
        arr = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).resize((16, 16), Image.BILINEAR).save(base / "img_align_celeba" / f, quality=95)
    lines = [str(n), " ".join(COLUMNS)] + [f + " " + " ".join(f"{v:2d}" for v in row) for f, row in zip(files, values)]
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (base / "list_eval_partition.txt").write_text("".join(f"{f} {i % 3}\n" for i, f in enumerate(files)))
    col = {c: values[:, i] == 1 for i, c in enumerate(COLUMNS)}
    truth = {"bald": col["Bald"], "beard": col["Goatee"] | col["Mustache"] | ~col["No_Beard"], "male": col["Male"]}
    return {"truth": truth, "parts": np.arange(n) % 3}


def _by_hand(p, t):
    pos, neg = [i for i in range(len(t)) if t[i]], [i for i in range(len(t)) if not t[i]]
    tpr = sum(p[i] >= 0.5 for i in pos) / len(pos)
    tnr = sum(p[i] < 0.5 for i in neg) / len(neg)
    wins = sum(1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0 for i in pos for j in neg)
    return (tpr + tnr) / 2, wins / (len(pos) * len(neg))


@pytest.mark.parametrize("split", ["all", "test"])
def test_multifeat_test_logs_balanced_accuracy_and_auroc(tmp_path, repo_root, split):
    from lightning.pytorch import Trainer

    from multifeat.cli import main as cli_main
    from multifeat.data.celeba import CelebADataset
    from multifeat.eval.evaluator import load_evaluator

    tree = _celeba_tree(tmp_path / "data")
    attrs = ["bald", "beard", "male"]
    torch.manual_seed(1)
    model = AttributeEvaluator(image_size=16, attributes=attrs, width=4, max_width=8, balance=True, immature_fraction=0.0)
    every = CelebADataset(tmp_path / "data", image_size=16, attributes=attrs, derived={"male": ["Male"]}, split="all")
    with torch.no_grad():  # centre the untrained outputs so that both classes are predicted
        logits = model.eval()(torch.stack([every[i]["image"] for i in range(len(every))]))
        model.net.head.bias.sub_(logits.median(dim=0).values)
    t = Trainer(max_epochs=0, logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    t.strategy.connect(model)
    ckpt = tmp_path / "ev.ckpt"
    t.save_checkpoint(str(ckpt))
    out = tmp_path / "run"
    rc = cli_main(["test", "--config", str(repo_root / "experiments" / "celeba_cpu" / "evaluator.yaml"), "--ckpt_path", str(ckpt),
                   "--data.init_args.root", str(tmp_path / "data"), "--data.init_args.split", split,
                   "--data.init_args.image_size", "16", "--data.init_args.batch_size", "4",
                   "--model.init_args.image_size", "16", "--model.init_args.attributes", "[bald, beard, male]",
                   "--model.init_args.width", "4", "--model.init_args.max_width", "8",
                   "--trainer.logger.init_args.save_dir", str(out), "--trainer.default_root_dir", str(out),
                   "--trainer.enable_progress_bar", "false"])
    assert rc == 0
    row = {k: float(v) for k, v in next(csv.DictReader(open(out / "metrics.csv"))).items() if v not in ("", None) and "/" in k}
    ds = CelebADataset(tmp_path / "data", image_size=16, attributes=attrs, derived={"male": ["Male"]}, split=split)
    keep = np.ones(30, bool) if split == "all" else tree["parts"] == 2
    assert len(ds) == int(keep.sum())
    p = load_evaluator(ckpt).predict_proba(torch.stack([ds[i]["image"] for i in range(len(ds))]))
    for j, a in enumerate(attrs):
        truth = tree["truth"][a][keep]
        bacc, auroc = _by_hand(p[:, j].tolist(), truth.tolist())
        assert row[f"test/bacc/{a}"] == pytest.approx(bacc, abs=1e-6), a
        assert row[f"test/auroc/{a}"] == pytest.approx(auroc, abs=1e-6), a
        # the 95 % interval: Wilson bounds of both recalls at 97.5 % each, averaged
        z = NormalDist().inv_cdf(0.9875)
        found = (p[:, j] >= 0.5).numpy()
        tp = wilson_interval(int((found & truth).sum()), int(truth.sum()), z)
        tn = wilson_interval(int((~found & ~truth).sum()), int((~truth).sum()), z)
        assert row[f"test/bacc_lo/{a}"] == pytest.approx((tp[0] + tn[0]) / 2, abs=1e-6), a
        assert row[f"test/bacc_hi/{a}"] == pytest.approx((tp[1] + tn[1]) / 2, abs=1e-6), a
        assert row[f"test/bacc_lo/{a}"] < bacc < row[f"test/bacc_hi/{a}"], a


def test_balance_weights_come_from_the_training_split(tmp_path):
    from multifeat.eval.judge_celeba import EvaluatorDataModule

    tree = _celeba_tree(tmp_path / "data", n=30, seed=2)
    dm = EvaluatorDataModule(source="celeba", root=str(tmp_path / "data"), image_size=16, attributes=["bald", "beard"],
                             batch_size=4, val_fraction=0.1)
    rates = dm.positive_rates()
    train = tree["parts"] == 0
    assert rates["bald"] == pytest.approx(tree["truth"]["bald"][train].mean())
    assert rates["beard"] == pytest.approx(tree["truth"]["beard"][train].mean())
    with pytest.raises(ConfigError, match="split"):
        EvaluatorDataModule(source="synthetic", image_size=16, split="test")
