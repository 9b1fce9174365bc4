"""The negative bank format: atomic, idempotent per (epoch, step), clear errors."""

import json

import pytest
import torch

from multifeat.errors import DataError
from multifeat.io.bank import INDEX_NAME, BankWriter, read_bank


def imgs(n, seed=0):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_add_writes_pngs_then_index(tmp_path):
    w = BankWriter(tmp_path / "bank")
    names = w.add(imgs(3), epoch=1, step=40)
    assert names == ["e00001_s00000040_000.png", "e00001_s00000040_001.png", "e00001_s00000040_002.png"]
    entries = read_bank(tmp_path / "bank")
    assert [(e["file"], e["epoch"], e["step"]) for e in entries] == [(n, 1, 40) for n in names]
    assert not list((tmp_path / "bank").glob("*.tmp"))


def test_resume_neither_loses_nor_duplicates(tmp_path):
    w = BankWriter(tmp_path)
    w.add(imgs(2), 0, 10)
    w.add(imgs(2, 1), 0, 20)
    # a resumed run reopens the bank and replays step 20, then continues
    w2 = BankWriter(tmp_path)
    assert len(w2) == 4
    assert w2.add(imgs(2, 1), 0, 20) == []
    w2.add(imgs(2, 2), 1, 30)
    entries = read_bank(tmp_path)
    assert len(entries) == 6
    assert len({e["file"] for e in entries}) == 6


def test_crash_between_images_and_index_is_repaired_by_replay(tmp_path):
    w = BankWriter(tmp_path)
    w.add(imgs(2), 0, 10)
    # simulate: PNGs of step 20 written, then killed before the index was replaced
    before = (tmp_path / INDEX_NAME).read_text()
    BankWriter(tmp_path).add(imgs(2, 1), 0, 20)
    (tmp_path / INDEX_NAME).write_text(before)
    w3 = BankWriter(tmp_path)
    assert len(w3) == 2
    w3.add(imgs(2, 1), 0, 20)  # the replayed step rewrites the same names
    assert len(read_bank(tmp_path)) == 4
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_missing_empty_and_malformed_banks_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist.*phase 1"):
        read_bank(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        read_bank(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / INDEX_NAME).write_text("{not json")
    with pytest.raises(DataError, match="malformed"):
        read_bank(bad)
    gone = tmp_path / "gone"
    BankWriter(gone).add(imgs(1), 0, 0)
    next(gone.glob("*.png")).unlink()
    with pytest.raises(DataError, match="file is missing"):
        read_bank(gone)
    assert json.loads((gone / INDEX_NAME).read_text())["entries"]
