"""Checkpoint reading: weights-only, clear errors for missing/corrupt/wrong-phase files."""

import os

import pytest
import torch

from multifeat.errors import CheckpointError
from multifeat.io.checkpoints import load_checkpoint, load_phase_module


def test_missing_folder_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.ckpt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
    (tmp_path / "zero.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*zero.ckpt"):
        load_checkpoint(tmp_path / "zero.ckpt")
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "multifeat": {"phase": "phase1"}}, good)
    (tmp_path / "trunc.ckpt").write_bytes(good.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="trunc.ckpt"):
        load_checkpoint(tmp_path / "trunc.ckpt")


def test_wrong_phase_is_named(tmp_path):
    p = tmp_path / "p1.ckpt"
    torch.save({"state_dict": {}, "multifeat": {"phase": "phase1"}}, p)
    assert load_checkpoint(p, expect_phase="phase1")["multifeat"]["phase"] == "phase1"
    with pytest.raises(CheckpointError, match="written by phase1; expected a phase2 checkpoint"):
        load_checkpoint(p, expect_phase="phase2")
    with pytest.raises(CheckpointError, match="no multifeat metadata"):
        torch.save({"state_dict": {}}, p)
        load_phase_module(p)


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "evil.ckpt"
    torch.save({"x": Exploit()}, p)
    with pytest.raises(CheckpointError, match="evil.ckpt"):
        load_checkpoint(p)
    assert not marker.exists()


def test_unreadable(tmp_path, monkeypatch):
    p = tmp_path / "x.ckpt"
    torch.save({}, p)
    # root reads anything, so simulate the permission check failing
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(CheckpointError, match="not readable"):
        load_checkpoint(p)
