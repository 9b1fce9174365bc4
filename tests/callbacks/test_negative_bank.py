"""NegativeBank: schedule, index contents, image contents, limits, resume, rank 0, atomicity, no side effects."""

from __future__ import annotations

import json
import types

import lightning as L
import numpy as np
import pytest
import torch
from helpers import tiny_phase1
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import multifeat.io.bank as bank_mod
from multifeat.callbacks import NegativeBank
from multifeat.callbacks.negative_bank import _SEED_STRIDE
from multifeat.errors import ConfigError
from multifeat.io.bank import read_bank
from multifeat.utils.images import to_uint8


def _loader(n=32, batch_size=8):
    x = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return DataLoader(TensorDataset(x), batch_size=batch_size)


def _fit(tmp_path, model, callbacks, max_steps=None, max_epochs=-1, ckpt_path=None, **kw):
    trainer = L.Trainer(max_steps=max_steps or -1, max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=callbacks,
                        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks), **kw)
    trainer.fit(model, _loader(), ckpt_path=ckpt_path)
    return trainer


def _keys(bank_dir):
    return [(e["epoch"], e["step"], e["file"]) for e in read_bank(bank_dir)]


def test_schedule_index_and_image_contents(tmp_path):
    model = tiny_phase1()
    expected_step0 = model.sample(2, seed=5 * _SEED_STRIDE + 0, ema=False)  # the untrained G1, live, eval mode
    cb = NegativeBank(bank_dir=str(tmp_path / "neg"), first_steps=8, every_n_steps=3, per_save=2, max_images=100, seed=5)
    _fit(tmp_path, model, [cb], max_steps=10)
    entries = read_bank(tmp_path / "neg")
    # 4 batches per epoch: step 6 is in epoch 1
    assert [(e["epoch"], e["step"]) for e in entries] == [(0, 0)] * 2 + [(0, 3)] * 2 + [(1, 6)] * 2
    assert len({e["file"] for e in entries}) == 6
    index = json.loads((tmp_path / "neg" / "index.json").read_text())
    assert index["entries"] == [{k: e[k] for k in ("file", "epoch", "step")} for e in entries]
    for i in range(2):
        got = np.asarray(Image.open(entries[i]["path"]).convert("RGB"))
        np.testing.assert_array_equal(got, to_uint8(expected_step0[i]).numpy())
    # later saves come from a trained generator: different images
    later = np.asarray(Image.open(entries[4]["path"]).convert("RGB"))
    assert not np.array_equal(later, np.asarray(Image.open(entries[0]["path"]).convert("RGB")))


def test_max_images_and_first_epochs(tmp_path):
    cb = NegativeBank(bank_dir=str(tmp_path / "a"), first_steps=None, every_n_steps=1, per_save=4, max_images=6)
    _fit(tmp_path, tiny_phase1(), [cb], max_steps=4)
    assert [(e, s) for e, s, _ in _keys(tmp_path / "a")] == [(0, 0)] * 4 + [(0, 1)] * 2
    # 4 batches per epoch; only epoch 0 collects
    cb = NegativeBank(bank_dir=str(tmp_path / "b"), first_epochs=1, first_steps=None, every_n_steps=2, per_save=1)
    _fit(tmp_path, tiny_phase1(), [cb], max_epochs=2)
    assert [(e, s) for e, s, _ in _keys(tmp_path / "b")] == [(0, 0), (0, 2)]


def test_default_bank_dir_is_under_default_root_dir(tmp_path):
    cb = NegativeBank(first_steps=2, every_n_steps=1, per_save=1)
    _fit(tmp_path, tiny_phase1(), [cb], max_steps=3)
    assert len(read_bank(tmp_path / "negatives")) == 2


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_resume_neither_loses_nor_duplicates(tmp_path):
    bank = tmp_path / "neg"
    ckpt_dir = tmp_path / "ckpt"

    def callbacks():
        return [NegativeBank(bank_dir=str(bank), first_steps=100, every_n_steps=2, per_save=2),
                ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=3, save_top_k=-1)]

    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(tmp_path, tiny_phase1(), callbacks() + [CrashAt(5)], max_steps=8)
    # the bank got ahead of the last checkpoint (step 3): steps 0, 2 and 4 are on disk
    assert sorted({s for _, s, _ in _keys(bank)}) == [0, 2, 4]
    step4 = {f: (bank / f).read_bytes() for _, s, f in _keys(bank) if s == 4}
    trainer = _fit(tmp_path, tiny_phase1(), callbacks(), max_steps=8, ckpt_path=str(ckpt_dir / "last.ckpt"))
    assert trainer.global_step == 8
    keys = _keys(bank)
    assert [(e, s) for e, s, _ in keys] == [(0, 0)] * 2 + [(0, 2)] * 2 + [(1, 4)] * 2 + [(1, 6)] * 2
    assert len({f for _, _, f in keys}) == len(keys) == 8
    assert {f: (bank / f).read_bytes() for _, s, f in keys if s == 4} == step4  # replayed step not rewritten
    assert sorted(p.name for p in bank.glob("*.png")) == sorted(f for _, _, f in keys)


def test_fresh_run_refuses_a_used_bank_unless_overwrite(tmp_path):
    bank = tmp_path / "neg"
    _fit(tmp_path, tiny_phase1(), [NegativeBank(bank_dir=str(bank), first_steps=3, every_n_steps=1, per_save=1)], max_steps=3)
    assert len(read_bank(bank)) == 3
    with pytest.raises(ConfigError, match="already holds 3 images"):
        _fit(tmp_path, tiny_phase1(), [NegativeBank(bank_dir=str(bank), first_steps=2, every_n_steps=1, per_save=1)], max_steps=2)
    _fit(tmp_path, tiny_phase1(),
         [NegativeBank(bank_dir=str(bank), first_steps=2, every_n_steps=1, per_save=1, overwrite=True)], max_steps=2)
    assert [(e, s) for e, s, _ in _keys(bank)] == [(0, 0), (0, 1)]
    assert len(list(bank.glob("*.png"))) == 2  # the old run's files are gone


def _fake_trainer(tmp_path, rank_zero, step=0, epoch=0):
    return types.SimpleNamespace(is_global_zero=rank_zero, global_step=step, current_epoch=epoch,
                                 default_root_dir=str(tmp_path), ckpt_path=None)


def test_only_rank_zero_writes(tmp_path):
    model = tiny_phase1()
    cb = NegativeBank(bank_dir=str(tmp_path / "neg"), every_n_steps=1)
    other = _fake_trainer(tmp_path, rank_zero=False)
    cb.on_train_start(other, model)
    cb.on_train_batch_start(other, model, None, 0)
    assert not (tmp_path / "neg").exists()
    cb2 = NegativeBank(bank_dir=str(tmp_path / "neg"), every_n_steps=1, per_save=3)
    zero = _fake_trainer(tmp_path, rank_zero=True)
    cb2.on_train_start(zero, model)
    cb2.on_train_batch_start(zero, model, None, 0)
    assert len(read_bank(tmp_path / "neg")) == 3


def test_interrupted_write_leaves_the_index_consistent(tmp_path, monkeypatch):
    model = tiny_phase1()
    cb = NegativeBank(bank_dir=str(tmp_path / "neg"), every_n_steps=1, per_save=3)
    trainer = _fake_trainer(tmp_path, rank_zero=True)
    cb.on_train_start(trainer, model)
    real_save = bank_mod.save_image
    calls = []

    def failing_save(img, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(img, path)

    monkeypatch.setattr(bank_mod, "save_image", failing_save)
    with pytest.raises(OSError):
        cb.on_train_batch_start(trainer, model, None, 0)
    assert not (tmp_path / "neg" / "index.json").exists()  # no entry names a missing file
    assert not list((tmp_path / "neg").glob("*.tmp"))
    monkeypatch.setattr(bank_mod, "save_image", real_save)
    cb.on_train_batch_start(trainer, model, None, 0)  # the replayed step completes the entry
    assert [e["step"] for e in read_bank(tmp_path / "neg")] == [0, 0, 0]


def test_collection_does_not_change_training(tmp_path):
    """Same seed with and without the bank: identical weights (no RNG draw, no BN statistics update)."""
    finals = []
    for use_bank in (False, True):
        L.seed_everything(3)
        model = tiny_phase1()
        cbs = [NegativeBank(bank_dir=str(tmp_path / "neg"), every_n_steps=1, per_save=4)] if use_bank else []
        _fit(tmp_path, model, cbs, max_steps=4)
        finals.append({k: v.clone() for k, v in model.state_dict().items()})
    assert len(read_bank(tmp_path / "neg")) == 16
    for k in finals[0]:
        assert torch.equal(finals[0][k], finals[1][k]), k


def test_draw_is_deterministic_per_step():
    model = tiny_phase1().train()
    cb = NegativeBank(seed=1)
    a, b, c = cb.draw(model, 3, 10), cb.draw(model, 3, 10), cb.draw(model, 3, 11)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.generator.training


@pytest.mark.parametrize("kwargs", [dict(every_n_steps=0), dict(per_save=0), dict(max_images=0), dict(first_steps=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        NegativeBank(**kwargs)
