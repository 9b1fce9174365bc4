"""``multifeat generate`` on phase-1 and phase-3 checkpoints (and a clear error for a classifier)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multifeat.cli import main as cli_main
from multifeat.commands import generate
from multifeat.errors import CheckpointError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "phases"))
from test_phase3 import make_phase1, make_phase2  # noqa: E402

from multifeat.phases.phase3 import Phase3GAN  # noqa: E402


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    p1, p2 = make_phase1(d / "p1.ckpt"), make_phase2(d / "p2.ckpt")
    m = Phase3GAN(g1_ckpt=str(p1), d2_ckpt=str(p2), add_blocks={8: 1}, num_fixed=4, snapshot_epoch=0)
    m.take_snapshot()  # an AdaIN-active phase-3 module
    from lightning.pytorch import Trainer

    t = Trainer(max_epochs=0, logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    t.strategy.connect(m)
    t.save_checkpoint(str(d / "p3.ckpt"))
    return {"phase1": p1, "phase2": p2, "phase3": d / "p3.ckpt", "module3": m}


@pytest.mark.parametrize("phase", ["phase1", "phase3"])
def test_generate_grid_and_images(ckpts, tmp_path, phase, capsys):
    out = tmp_path / "grid.png"
    assert generate.main(["--ckpt", str(ckpts[phase]), "--n", "6", "--nrow", "3", "--out", str(out),
                          "--images-dir", str(tmp_path / "imgs"), "--seed", "5"]) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 18 + 2, 3 * 18 + 2, 3)  # 2 rows x 3 columns of 16 px with 2 px padding
    files = sorted((tmp_path / "imgs").glob("*.png"))
    assert len(files) == 6 and np.asarray(Image.open(files[0])).shape == (16, 16, 3)
    assert phase in capsys.readouterr().out
    # same seed, same images; the images are those of module.sample(n, seed)
    out2 = tmp_path / "again.png"
    assert cli_main(["generate", "--ckpt", str(ckpts[phase]), "--n", "6", "--nrow", "3", "--out", str(out2), "--seed", "5"]) == 0
    assert np.array_equal(np.asarray(Image.open(out2)), grid)
    if phase == "phase3":
        from multifeat.utils.images import to_uint8

        expected = to_uint8(ckpts["module3"].eval().sample(6, seed=5)[0]).numpy()
        assert np.array_equal(np.asarray(Image.open(files[0])), expected)


def test_generate_refuses_a_classifier_and_missing_files(ckpts, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="generates no images"):
        generate.main(["--ckpt", str(ckpts["phase2"]), "--out", str(tmp_path / "x.png")])
    assert cli_main(["generate", "--ckpt", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_generate_restore_option(ckpts, tmp_path):
    # identity restorer: same grid as without; gpen without weights: a clear error
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert generate.main(["--ckpt", str(ckpts["phase1"]), "--n", "4", "--out", str(a)]) == 0
    assert generate.main(["--ckpt", str(ckpts["phase1"]), "--n", "4", "--out", str(b), "--restore", "identity"]) == 0
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    from multifeat.errors import ConfigError

    with pytest.raises(ConfigError, match="restore-weights"):
        generate.main(["--ckpt", str(ckpts["phase1"]), "--out", str(b), "--restore", "gpen"])
