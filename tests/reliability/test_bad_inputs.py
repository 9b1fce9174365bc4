"""Bad input ends in a clear message, a non-zero exit and no lost file — never a traceback.

Each case runs the command line (``multifeat.cli.main``, the function behind the ``multifeat``
command; a few also as a real subprocess) and checks: exit code 2, stderr names the offending
file/key/value, stderr has no traceback, and every file that existed before is unchanged.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from multifeat import cli
from multifeat.phases import FeatureClassifier, Phase1GAN

REPO = Path(__file__).resolve().parents[2]
TINY_G = dict(z_dim=8, g_width=4, d_width=4, max_width=16)


# ------------------------------------------------------------------------------------------ helpers
def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith((".log", ".tmp"))}


def _run(argv: list[str], capsys, tmp_path: Path, *expected: str) -> str:
    before = _hashes(tmp_path)
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2, f"exit code {rc}, expected 2; stderr:\n{err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    low = err.lower()
    for word in expected:
        assert word.lower() in low, f"stderr does not name {word!r}:\n{err[-2000:]}"
    after = _hashes(tmp_path)
    lost = {k for k, v in before.items() if after.get(k) != v}
    assert not lost, f"files changed or lost: {sorted(lost)}"
    return err


def _save_ckpt(module, path: Path) -> Path:
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=path.parent)
    size = module.hparams.image_size
    data = TensorDataset(torch.rand(4, 3, size, size) * 2 - 1, torch.ones(4))

    def collate(items):
        x = torch.stack([i[0] for i in items])
        return {"image": x, "label": torch.ones(len(items)), "source": torch.zeros(len(items), dtype=torch.long)}

    trainer.fit(module, DataLoader(data, batch_size=4, collate_fn=collate))
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    return {
        "p1_16": _save_ckpt(Phase1GAN(image_size=16, **TINY_G), d / "p1_16.ckpt"),
        "p2_16": _save_ckpt(FeatureClassifier(image_size=16, width=4, max_width=16), d / "p2_16.ckpt"),
        "p2_32": _save_ckpt(FeatureClassifier(image_size=32, width=4, max_width=16), d / "p2_32.ckpt"),
    }


def _fit_config(tmp_path: Path, data: dict | None = None, model: dict | None = None, model_class="Phase1GAN",
                name="cfg.yaml") -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_steps": 1, "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "limit_val_batches": 0,
                    "default_root_dir": str(tmp_path / "run")},
        "model": {"class_path": f"multifeat.phases.{model_class}",
                  "init_args": {"image_size": 16, **TINY_G, **(model or {})}},
        "data": {"class_path": "multifeat.data.AttributeDataModule",
                 "init_args": {"source": "synthetic", "image_size": 16, "num_samples": 16, "batch_size": 4,
                               "val_fraction": 0.0, **(data or {})}},
    }
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def _fit(tmp_path, capsys, *expected, extra=(), **kw):
    return _run(["fit", "--config", str(_fit_config(tmp_path, **kw)), *extra], capsys, tmp_path, *expected)


def _png(path: Path, size=32) -> Path:
    Image.new("RGB", (size, size), (120, 30, 200)).save(path)
    return path


def _folder(tmp_path: Path, **files: bytes | int) -> Path:
    """A folder with good 32px PNGs (int: that many) and named files with given bytes."""
    d = tmp_path / "faces"
    d.mkdir(exist_ok=True)
    for name, content in files.items():
        name = name.replace("__", ".")
        if isinstance(content, int):
            for i in range(content):
                _png(d / f"{name}{i}.png")
        else:
            (d / name).write_bytes(content)
    return d


def _folder_data(root: Path, **kw) -> dict:
    return {"source": "folder", "root": str(root), "folder_attrs": {"bald": 1}, "strict": True, **kw}


# ------------------------------------------------------------------------------------------ images / folders
def test_missing_folder(tmp_path, capsys):
    _fit(tmp_path, capsys, "nowhere", data=_folder_data(tmp_path / "nowhere"))


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fit(tmp_path, capsys, "empty", data=_folder_data(tmp_path / "empty"))


def test_folder_with_only_non_images(tmp_path, capsys):
    d = _folder(tmp_path, notes__txt=b"hello", labels__csv=b"a,b\n")
    _fit(tmp_path, capsys, str(d), data=_folder_data(d))


def test_corrupt_image_strict(tmp_path, capsys):
    d = _folder(tmp_path, ok=8, broken__png=b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    _fit(tmp_path, capsys, "broken.png", data=_folder_data(d))


def test_zero_byte_image_strict(tmp_path, capsys):
    d = _folder(tmp_path, ok=8, empty__png=b"")
    _fit(tmp_path, capsys, "empty.png", data=_folder_data(d))


def test_truncated_image_strict(tmp_path, capsys):
    good = _png(tmp_path / "full.png", 64).read_bytes()
    (tmp_path / "full.png").unlink()
    d = _folder(tmp_path, ok=8, cut__png=good[: len(good) // 3])
    _fit(tmp_path, capsys, "cut.png", data=_folder_data(d))


def test_wrong_extension_strict(tmp_path, capsys):
    d = _folder(tmp_path, ok=8, text__jpg=b"this is not a jpeg at all\n" * 10)
    _fit(tmp_path, capsys, "text.jpg", data=_folder_data(d))


def test_images_smaller_than_target_strict(tmp_path, capsys):
    d = tmp_path / "small"
    d.mkdir()
    for i in range(8):
        _png(d / f"{i}.png", size=8)
    _fit(tmp_path, capsys, "16", data=_folder_data(d))


# ------------------------------------------------------------------------------------------ attributes / filters
def test_attribute_not_in_data(tmp_path, capsys):
    _fit(tmp_path, capsys, "hair", data={"require": {"hair": True}})


def test_filter_matches_nothing(tmp_path, capsys):
    probs = {"bald": 0.0, "beard": 0.5, "eyeglasses": 0.5, "smiling": 0.5}
    _fit(tmp_path, capsys, "bald", data={"require": {"bald": True}, "synthetic": {"attribute_probs": probs}})


# ------------------------------------------------------------------------------------------ sizes / values
@pytest.mark.parametrize("where, key, value", [
    ("data", "image_size", 24),
    ("data", "image_size", 0),
    ("data", "image_size", -32),
    ("model", "image_size", 24),
    ("model", "image_size", 0),
    ("data", "batch_size", 0),
    ("data", "batch_size", -4),
    ("data", "num_samples", 0),
    ("model", "lr_g", -0.001),
    ("model", "betas_d", [0.5, 1.5]),
    ("model", "d_steps_per_g", 0),
])
def test_bad_sizes_and_values(tmp_path, capsys, where, key, value):
    _fit(tmp_path, capsys, key, **{where: {key: value}})


# ------------------------------------------------------------------------------------------ YAML
def test_yaml_unknown_key(tmp_path, capsys):
    _fit(tmp_path, capsys, "colour_depth", model={"colour_depth": 3})


def test_yaml_wrong_type(tmp_path, capsys):
    _fit(tmp_path, capsys, "image_size", model={"image_size": "big"})


def test_yaml_syntax_error(tmp_path, capsys):
    p = tmp_path / "broken.yaml"
    p.write_text("trainer:\n  max_steps: [1\nmodel: {\n")
    _run(["fit", "--config", str(p)], capsys, tmp_path, "line 2", "column")


def test_config_file_missing(tmp_path, capsys):
    _run(["fit", "--config", str(tmp_path / "absent.yaml")], capsys, tmp_path, "absent.yaml")


# ------------------------------------------------------------------------------------------ checkpoints
def _generate(tmp_path, capsys, ckpt, *expected, extra=()):
    return _run(["generate", "--ckpt", str(ckpt), "--n", "4", "--out", str(tmp_path / "grid.png"), *extra],
                capsys, tmp_path, *expected)


def test_checkpoint_missing(tmp_path, capsys):
    _generate(tmp_path, capsys, tmp_path / "none.ckpt", "none.ckpt")


def test_checkpoint_zero_bytes(tmp_path, capsys):
    (tmp_path / "zero.ckpt").write_bytes(b"")
    _generate(tmp_path, capsys, tmp_path / "zero.ckpt", "zero.ckpt")


def test_checkpoint_truncated(tmp_path, capsys, ckpts):
    data = ckpts["p1_16"].read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    _generate(tmp_path, capsys, tmp_path / "cut.ckpt", "cut.ckpt")


def test_checkpoint_not_a_torch_file(tmp_path, capsys):
    (tmp_path / "notes.ckpt").write_text("weights: none\n")
    _generate(tmp_path, capsys, tmp_path / "notes.ckpt", "notes.ckpt")


def test_checkpoint_is_a_folder(tmp_path, capsys):
    (tmp_path / "dir.ckpt").mkdir()
    _generate(tmp_path, capsys, tmp_path / "dir.ckpt", "dir.ckpt", "folder")


def test_checkpoint_unreadable(tmp_path, capsys, ckpts, monkeypatch):
    p = tmp_path / "locked.ckpt"
    p.write_bytes(ckpts["p1_16"].read_bytes())
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: False if Path(path) == p else real(path, mode, *a, **k))
    _generate(tmp_path, capsys, p, "locked.ckpt", "readable")


def test_generate_from_a_classifier_checkpoint(tmp_path, capsys, ckpts):
    _generate(tmp_path, capsys, ckpts["p2_16"], "p2_16.ckpt")


def test_resume_from_a_checkpoint_of_another_phase(tmp_path, capsys, ckpts):
    _fit(tmp_path, capsys, "phase2", "phase1", extra=["--ckpt_path", str(ckpts["p2_16"])])


def test_resume_from_a_checkpoint_of_another_resolution(tmp_path, capsys, ckpts):
    _fit(tmp_path, capsys, "16", "32", extra=["--ckpt_path", str(ckpts["p1_16"])],
         model={"image_size": 32}, data={"image_size": 32})


def test_phase3_with_a_d2_for_another_image_size(tmp_path, capsys, ckpts):
    cfg = _fit_config(tmp_path, model_class="Phase3GAN")
    c = yaml.safe_load(cfg.read_text())
    c["model"]["init_args"] = {"g1_ckpt": str(ckpts["p1_16"]), "d2_ckpt": str(ckpts["p2_32"]), "add_blocks": [8],
                               "adain_at": "feat8"}
    cfg.write_text(yaml.safe_dump(c))
    _run(["fit", "--config", str(cfg)], capsys, tmp_path, "p2_32.ckpt", "32", "16")


def test_phase3_with_a_phase2_checkpoint_as_g1(tmp_path, capsys, ckpts):
    cfg = _fit_config(tmp_path, model_class="Phase3GAN")
    c = yaml.safe_load(cfg.read_text())
    c["model"]["init_args"] = {"g1_ckpt": str(ckpts["p2_16"]), "d2_ckpt": str(ckpts["p2_16"])}
    cfg.write_text(yaml.safe_dump(c))
    _run(["fit", "--config", str(cfg)], capsys, tmp_path, "p2_16.ckpt", "phase1")


# ------------------------------------------------------------------------------------------ outputs
def test_output_under_a_regular_file(tmp_path, capsys, ckpts):
    (tmp_path / "file.txt").write_text("keep me\n")
    _run(["generate", "--ckpt", str(ckpts["p1_16"]), "--n", "4", "--out", str(tmp_path / "file.txt" / "sub" / "g.png")],
         capsys, tmp_path, "file.txt")


def test_disk_full_keeps_the_previous_output(tmp_path, capsys, ckpts, monkeypatch):
    out = tmp_path / "grid.png"
    out.write_bytes(b"previous grid")
    import multifeat.utils.files as files

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(files.os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    _run(["generate", "--ckpt", str(ckpts["p1_16"]), "--n", "4", "--out", str(out)], capsys, tmp_path,
         "grid.png", "no space")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temporary file left behind"


def test_generate_zero_images(tmp_path, capsys, ckpts):
    _generate(tmp_path, capsys, ckpts["p1_16"], "--n", extra=["--n", "0"])


def test_evaluate_missing_images_folder(tmp_path, capsys):
    _run(["evaluate", "--images", str(tmp_path / "no_images"), "--out", str(tmp_path / "ev")], capsys, tmp_path,
         "no_images")


# ------------------------------------------------------------------------------------------ real processes
@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing_ckpt", "data_error_in_setup", "config_error_in_init"])
def test_command_line_process_prints_no_traceback(tmp_path, case):
    if case == "missing_ckpt":
        argv = ["generate", "--ckpt", str(tmp_path / "gone.ckpt")]
        expected = "gone.ckpt"
    elif case == "data_error_in_setup":
        argv = ["fit", "--config", str(_fit_config(tmp_path, data=_folder_data(tmp_path / "nowhere")))]
        expected = "nowhere"
    else:
        argv = ["fit", "--config", str(_fit_config(tmp_path, model={"image_size": 24}))]
        expected = "image_size"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "multifeat.cli", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert expected in proc.stderr
