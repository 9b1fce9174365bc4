"""``multifeat evaluate`` judges images with an evaluator of the same data: CelebA faces with a CelebA
evaluator (trained and cached when none is given), SyntheticFaces with a SyntheticFaces one."""

import json
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from multifeat.commands import evaluate as E
from multifeat.errors import ConfigError
from multifeat.eval.evaluate import checkpoint_data_source, data_source_of
from multifeat.eval.evaluator_cache import cached_celeba_evaluator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from celeba_fixtures import make_celeba  # noqa: E402


def _generator(tmp_path: Path, name: str, **data_kw) -> Path:
    """A Phase1GAN trained for one step on the given data (tiny), saved as a checkpoint."""
    from multifeat.data import AttributeDataModule
    from multifeat.phases import Phase1GAN

    L.seed_everything(0, verbose=False)
    dm = AttributeDataModule(image_size=16, batch_size=4, val_fraction=0.0, **data_kw)
    model = Phase1GAN(image_size=16, z_dim=8, g_width=4, d_width=4, max_width=16, num_fixed=4)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    path = tmp_path / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate_data")
    make_celeba(tmp / "faces", n=24)
    from multifeat.eval.evaluator import train_evaluator

    return {
        "root": tmp / "faces",
        "celeba_g": _generator(tmp, "celeba_g", source="celeba", root=str(tmp / "faces")),
        "synth_g": _generator(tmp, "synth_g", source="synthetic", num_samples=16),
        "synth_ev": train_evaluator(image_size=16, max_steps=2, num_samples=32, batch_size=8, out_path=tmp / "synth_ev.ckpt",
                                    accelerator="cpu"),
        "celeba_ev": cached_celeba_evaluator(tmp / "faces", 16, cache_dir=tmp / "cache", max_steps=2, batch_size=4,
                                             accelerator="cpu", log=None)[1],
        "tmp": tmp,
    }


def test_checkpoints_say_what_data_they_learned(world):
    assert checkpoint_data_source(world["celeba_g"]) == {"source": "celeba", "root": str(world["root"])}
    assert checkpoint_data_source(world["synth_g"]) == {"source": "synthetic", "root": None}
    assert checkpoint_data_source(world["synth_ev"])["source"] == "synthetic"
    ev = torch.load(world["celeba_ev"], map_location="cpu", weights_only=False)
    assert ev["multifeat"]["data_source"] == {"source": "celeba", "root": str(world["root"].resolve())}
    assert data_source_of({"state_dict": {}}) is None


def test_celeba_generator_with_a_synthetic_evaluator_is_refused(world, tmp_path):
    with pytest.raises(ConfigError, match=r"evaluator '.*synth_ev.ckpt' was trained on SyntheticFaces but generator "
                                          r"'.*celeba_g.ckpt' comes from CelebA .*Omit --evaluator to train and cache a "
                                          r"CelebA evaluator"):
        E.main(["--generator", str(world["celeba_g"]), "--evaluator", str(world["synth_ev"]), "--n", "4",
                "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_synthetic_generator_with_a_celeba_evaluator_is_refused(world, tmp_path):
    with pytest.raises(ConfigError, match=r"was trained on CelebA \(root .*\) but generator '.*synth_g.ckpt' comes from "
                                          r"SyntheticFaces"):
        E.main(["--generator", str(world["synth_g"]), "--evaluator", str(world["celeba_ev"]), "--n", "4",
                "--out", str(tmp_path / "out")])
    with pytest.raises(ConfigError, match=r"image folder .* \(--data synthetic\) comes from SyntheticFaces"):
        (tmp_path / "imgs").mkdir()
        from multifeat.utils.images import save_image

        for i in range(2):
            save_image(torch.zeros(3, 16, 16), tmp_path / "imgs" / f"{i}.png")
        E.main(["--images", str(tmp_path / "imgs"), "--evaluator", str(world["celeba_ev"]), "--n", "2",
                "--out", str(tmp_path / "out")])


def test_celeba_generator_without_evaluator_gets_a_cached_celeba_one(world, tmp_path, monkeypatch):
    monkeypatch.setenv("MULTIFEAT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = ["--generator", str(world["celeba_g"]), "--n", "4", "--evaluator-steps", "2", "--out", str(out), "--device", "cpu",
            "--kid-subsets", "2", "--kid-subset-size", "2"]
    assert E.main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    path = Path(m["evaluator"]["path"])
    assert path.parent == tmp_path / "cache" / "evaluators" and path.name.startswith("evaluator-celeba-S16-")
    assert checkpoint_data_source(path) == {"source": "celeba", "root": str(world["root"].resolve())}
    assert m["data_source"]["source"] == "celeba" and m["real"] is None and m["fid"] is None  # no cartoon reference
    stamp = path.stat().st_mtime_ns
    assert E.main(args) == 0 and path.stat().st_mtime_ns == stamp  # cached: not trained again
    with pytest.raises(ConfigError, match="--real synthetic compares CelebA"):
        E.main([*args, "--real", "synthetic"])
