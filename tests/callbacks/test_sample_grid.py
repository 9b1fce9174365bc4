"""SampleGrid: files per step and latest.png, their content, rank-0 only, logger handling."""

from __future__ import annotations

import types

import lightning as L
import numpy as np
import pytest
import torch
from helpers import tiny_phase1
from lightning.pytorch import LightningModule
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import multifeat.callbacks.sample_grid as sg
from multifeat.callbacks import SampleGrid
from multifeat.errors import ConfigError
from multifeat.utils.images import make_grid, to_uint8


def _loader():
    x = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return DataLoader(TensorDataset(x), batch_size=8)


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_grids_every_n_steps_and_at_fit_end(tmp_path):
    model = tiny_phase1(num_fixed=9)
    cb = SampleGrid(every_n_steps=2, upscale=2)
    trainer = L.Trainer(max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[cb])
    trainer.fit(model, _loader())
    out = tmp_path / "samples"  # default: <default_root_dir>/samples when there is no logger
    names = sorted(p.name for p in out.iterdir())
    assert names == ["latest.png", "step_00000002.png", "step_00000004.png", "step_00000005.png"]
    # content: the fixed-noise samples of the final model, tiled 3x3, upscaled x2, as uint8
    grid = make_grid(model.sample_fixed())
    expected = to_uint8(grid.repeat_interleave(2, 1).repeat_interleave(2, 2)).numpy()
    np.testing.assert_array_equal(_png(out / "step_00000005.png"), expected)
    np.testing.assert_array_equal(_png(out / "latest.png"), expected)
    assert _png(out / "step_00000002.png").shape == expected.shape
    assert not list(out.glob("*.tmp"))


def test_every_n_epochs_and_num_samples_and_dirpath(tmp_path):
    model = tiny_phase1(num_fixed=16)
    cb = SampleGrid(every_n_steps=None, every_n_epochs=1, num_samples=4, nrow=4, dirpath=str(tmp_path / "g"), on_fit_end=False)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[cb])
    trainer.fit(model, _loader())
    names = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert names == ["latest.png", "step_00000004.png", "step_00000008.png"]
    # one row of four 16 px images with 2 px padding
    assert _png(tmp_path / "g" / "latest.png").shape == (16 + 4, 4 * 18 + 2, 3)


class SampleOnly(LightningModule):
    """A generator module without fixed noise: SampleGrid falls back to sample(n, seed)."""

    def sample(self, n, seed=None):
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n, 3, 4, 4, generator=g) * 2 - 1


def _fake_trainer(tmp_path, rank_zero=True, loggers=()):
    return types.SimpleNamespace(is_global_zero=rank_zero, sanity_checking=False, global_step=7,
                                 loggers=list(loggers), default_root_dir=str(tmp_path))


def test_non_zero_rank_writes_nothing(tmp_path):
    cb = SampleGrid(dirpath=str(tmp_path / "s"))
    assert cb.write(_fake_trainer(tmp_path, rank_zero=False), SampleOnly()) is None
    assert not (tmp_path / "s").exists()
    assert cb.write(_fake_trainer(tmp_path), SampleOnly()).name == "step_00000007.png"


def test_fallback_to_sample_with_seed_and_wandb_logging(tmp_path, monkeypatch):
    class FakeWandb:
        def __init__(self):
            self.calls = []

        def log_image(self, key, images, step=None, **kw):
            self.calls.append((key, images, step, kw))

    monkeypatch.setattr(sg, "WandbLogger", FakeWandb)
    wb = FakeWandb()
    other = types.SimpleNamespace()  # e.g. a CSV logger: skipped without error
    cb = SampleGrid(dirpath=str(tmp_path), num_samples=4, seed=5, key="grid")
    cb.write(_fake_trainer(tmp_path, loggers=[other, wb]), SampleOnly())
    expected = to_uint8(make_grid(SampleOnly().sample(4, seed=5))).numpy()
    np.testing.assert_array_equal(_png(tmp_path / "latest.png"), expected)
    (key, images, step, kw), = wb.calls
    assert key == "grid" and step == 7 and kw["caption"] == ["step 7"]
    np.testing.assert_array_equal(images[0], expected)
    # same step again: nothing new
    cb.write(_fake_trainer(tmp_path, loggers=[wb]), SampleOnly())
    assert len(wb.calls) == 1


def test_module_without_sampling_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="sample_fixed"):
        SampleGrid(dirpath=str(tmp_path)).write(_fake_trainer(tmp_path), LightningModule())


@pytest.mark.parametrize("kwargs", [dict(every_n_steps=-1), dict(num_samples=0), dict(upscale=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        SampleGrid(**kwargs)
