"""W&B without an account: runs are written offline and carry what W&B's compare view needs.

The offline run's transaction log ``<save_dir>/wandb/offline-run-*/run-<id>.wandb`` (what
``wandb sync`` uploads) is read back record by record: the run record (project, group, job type,
name), the config updates (hyper-parameters), and the history rows (losses, images, tables). The
file is a sequence of 32 KiB blocks of records ``crc32 (4 bytes) | length (2) | type (1) | data``
(type 1 = whole record, 2/3/4 = first/middle/last piece) after a 7-byte header ``:W&B`` 0xBEE1 0;
each record is a ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
_BLOCK, _HEADER = 32768, 7


def read_records(path: Path) -> list:
    """The protobuf records of an offline run file, checksums verified."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B run file"
    pos, pieces, payloads = 7, b"", []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block ends in padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if crc == length == kind == 0:
            break
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"{path}: bad checksum at {pos}"
        pos += _HEADER + length
        if kind == 1:
            payloads.append(chunk)
        elif kind == 2:
            pieces = chunk
        elif kind == 3:
            pieces += chunk
        elif kind == 4:
            payloads.append(pieces + chunk)
            pieces = b""
    records = []
    for payload in payloads:
        r = pb.Record()
        r.ParseFromString(payload)
        records.append(r)
    return records


@dataclass
class OfflineRun:
    folder: Path
    id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def values(self, key: str) -> list:
        return [row[key] for row in self.history if key in row]

    def media(self, key: str) -> list[dict]:
        """Logged media of ``key`` (images, tables): their ``_type``, path(s) and sizes, per row."""
        out = []
        for row in self.history:
            sub = {k[len(key) + 1 :]: v for k, v in row.items() if k.startswith(key + "/")}
            if "_type" in sub:
                out.append(sub)
        return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def finished_records(folder: Path, timeout: float = 30.0) -> list:
    """The records of a run folder's log once its ``exit`` record is there: W&B's service process
    writes the file and may still be flushing it when ``finish()`` returns to the caller."""
    deadline = time.monotonic() + timeout
    while True:
        logs = list(Path(folder).glob("run-*.wandb"))
        try:
            records = read_records(logs[0]) if len(logs) == 1 and logs[0].stat().st_size > 7 else []
        except AssertionError:  # a record still being written
            if time.monotonic() > deadline:
                raise
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            assert records, f"no W&B run log in {folder}"
            return records
        time.sleep(0.2)


def read_offline_run(folder: Path) -> OfflineRun:
    """Run record, config and history rows of ``<save_dir>/wandb/offline-run-*``."""
    run = OfflineRun(Path(folder))
    for r in finished_records(folder):
        kind = r.WhichOneof("record_type")
        if kind == "run":  # later run records may repeat the run with only some fields set
            for attr, value in (("id", r.run.run_id), ("project", r.run.project), ("group", r.run.run_group),
                                ("job_type", r.run.job_type), ("name", r.run.display_name)):
                setattr(run, attr, getattr(run, attr) or value)
        elif kind == "config":
            run.config.update({_key(i): json.loads(i.value_json) for i in r.config.update if not _key(i).startswith("_")})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in r.history.item})
    return run


def offline_runs(root: Path) -> list[OfflineRun]:
    return [read_offline_run(p) for p in sorted(Path(root).rglob("offline-run-*")) if p.is_dir()]


# ---------------------------------------------------------------------------------------------- quick
def _result(label: str, joint: float) -> dict:
    return {"label": label, "n": 8, "features": ["bald", "beard"], "joint": {"rate": joint, "ci95": [0.0, 0.5]},
            "feature_rates": {"bald": {"rate": 0.75}, "beard": {"rate": 0.5}}, "fid": 12.5, "kid_mean": 0.01,
            "kid_std": 0.002, "extractor": "random-conv", "diversity": {"generated": 0.3, "ratio": 0.9}}


def test_logger_writes_config_losses_image_and_table_offline(tmp_path, monkeypatch):
    """The package's WandbLogger in offline mode; everything a phase and the evaluation log, read back."""
    from multifeat.eval.evaluate import log_result
    from multifeat.loggers import WandbLogger, wandb_mode

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == "offline"
    logger = WandbLogger(project="cmp", name="a", group="g1", job_type="phase1", save_dir=str(tmp_path))
    try:
        logger.log_hyperparams({"lr_g": 0.001, "z_dim": 8})
        logger.log_metrics({"loss/d": 0.5, "loss/g": 1.25}, step=0)
        logger.log_image(key="samples", images=[torch.zeros(16, 16, 3, dtype=torch.uint8).numpy()], step=1)
        log_result([_result("generated", 0.25), _result("restored", 0.5)], logger)
    finally:
        logger.experiment.finish()

    (run,) = offline_runs(tmp_path / "wandb")
    assert (run.project, run.group, run.job_type, run.name) == ("cmp", "g1", "phase1", "a")
    assert run.config == {"lr_g": 0.001, "z_dim": 8}
    assert run.values("loss/d") == [0.5] and run.values("loss/g") == [1.25]
    (image,) = run.media("samples")
    assert image["_type"] == "images/separated" and (image["width"], image["height"]) == (16, 16)
    assert all((run.folder / "files" / f).is_file() for f in image["filenames"])
    (table,) = run.media("eval/summary")
    assert table["_type"] == "table-file" and table["nrows"] == 2
    content = json.loads((run.folder / "files" / table["path"]).read_text())
    rows = [dict(zip(content["columns"], row)) for row in content["data"]]
    assert [(r["label"], r["joint_rate"], r["rate_bald"]) for r in rows] == [("generated", 0.25, 0.75),
                                                                            ("restored", 0.5, 0.75)]
    assert run.values("eval/restored/joint_rate") == [0.5]


def test_reader_rejects_a_corrupted_run_file(tmp_path):
    data = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    payload = b"\x08\x01"
    kind = 1
    data += struct.pack("<IHB", zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF, len(payload), kind)
    data += payload
    good = tmp_path / "good.wandb"
    good.write_bytes(bytes(data))
    assert len(read_records(good)) == 1
    data[-1] ^= 0xFF
    bad = tmp_path / "bad.wandb"
    bad.write_bytes(bytes(data))
    with pytest.raises(AssertionError, match="bad checksum"):
        read_records(bad)


# ---------------------------------------------------------------------------------------------- slow
def _cli_args(save_dir: Path, lr_g: float, z_dim: int, name: str) -> list[str]:
    return [
        "fit", "--model=multifeat.phases.Phase1GAN", "--model.image_size=16", f"--model.z_dim={z_dim}",
        "--model.g_width=4", "--model.d_width=4", "--model.max_width=16", "--model.num_fixed=4", f"--model.lr_g={lr_g}",
        "--data=multifeat.data.AttributeDataModule", "--data.image_size=16", "--data.num_samples=16",
        "--data.batch_size=8", "--data.val_fraction=0", "--data.require={bald: true}",
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.max_steps=3", "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={save_dir}/{name}", f"--trainer.logger.init_args.save_dir={save_dir}/{name}",
        "--trainer.logger.init_args.project=multifeat-cmp", "--trainer.logger.init_args.group=lr-sweep",
        "--trainer.logger.init_args.job_type=phase1", f"--trainer.logger.init_args.name={name}",
        "--trainer.callbacks+=multifeat.callbacks.SampleGrid", "--trainer.callbacks.every_n_steps=2",
        f"--trainer.callbacks.dirpath={save_dir}/{name}/samples",
    ]


@pytest.mark.slow
def test_two_cli_runs_are_comparable_offline_runs(tmp_path):
    """`multifeat fit` twice with different hyper-parameters, default W&B logger, no account."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    # WANDB_SERVICE: an in-process run earlier in this session leaves the address of its W&B service
    # here; a child process must start its own
    for k in ("WANDB_SERVICE", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_RUN_GROUP", "WANDB_JOB_TYPE", "WANDB_NAME"):
        env.pop(k, None)
    save = tmp_path / "runs"
    settings = {"lr-1e-3": (0.001, 8), "lr-5e-4": (0.0005, 12)}
    procs = {name: subprocess.Popen([sys.executable, "-m", "multifeat.cli", *_cli_args(save, lr, z, name)], cwd=tmp_path,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, (lr, z) in settings.items()}
    for name, p in procs.items():
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, f"{name}:\n{out[-4000:]}"

    runs = {r.name: r for r in offline_runs(save)}
    assert sorted(runs) == sorted(settings)
    assert len({r.id for r in runs.values()}) == 2
    for name, (lr, z) in settings.items():
        run = runs[name]
        assert (run.project, run.group, run.job_type) == ("multifeat-cmp", "lr-sweep", "phase1")
        # the hyper-parameters of model and data, as configured
        assert run.config["lr_g"] == lr and run.config["z_dim"] == z and run.config["image_size"] == 16
        assert run.config["require"] == {"bald": True} and run.config["batch_size"] == 8
        for key in ("loss/d", "loss/g"):
            values = run.values(key)
            assert len(values) == 3 and all(math.isfinite(v) for v in values), (key, values)
        grids = run.media("samples")
        assert [g["_type"] for g in grids] == ["images/separated"] * 2  # steps 2 and 3 (end of fit)
        for g in grids:
            assert all((run.folder / "files" / f).is_file() for f in g["filenames"])
    # the same keys in both runs: W&B's compare view lines them up
    a, b = runs.values()
    assert {k for row in a.history for k in row} == {k for row in b.history for k in row}
    assert a.config.keys() == b.config.keys()


def _tiny_pipeline() -> dict:
    """tests/configs/tiny_pipeline.yaml, logging to W&B, one phase-1 epoch."""
    from multifeat.utils.config import set_dotted

    cfg = yaml.safe_load((Path(__file__).resolve().parent / "configs" / "tiny_pipeline.yaml").read_text())
    for item in ("name=cmp-pipeline", "logger=wandb", "wandb={project: multifeat-cmp}", "phase1.trainer.max_epochs=1",
                 "phase1.callbacks.negative_bank={first_steps: 2, every_n_steps: 1, per_save: 4}"):
        set_dotted(cfg, item, create=True, example="")
    return cfg


TINY_PIPELINE = _tiny_pipeline()


@pytest.mark.slow
def test_pipeline_runs_share_a_group_with_one_job_type_per_phase(tmp_path, monkeypatch):
    from multifeat.commands import pipeline

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(copy.deepcopy(TINY_PIPELINE)))
    assert pipeline.main(["--config", str(cfg), "--run-dir", str(tmp_path / "run")]) == 0

    runs = offline_runs(tmp_path / "run")
    by_job: dict[str, list[OfflineRun]] = {}
    for r in runs:
        by_job.setdefault(r.job_type, []).append(r)
    assert sorted(by_job) == ["eval", "phase1", "phase2", "phase3"]
    assert [len(by_job[j]) for j in ("phase1", "phase2", "phase3", "eval")] == [1, 1, 1, 2]  # G3 and the G1 baseline
    assert {r.group for r in runs} == {"cmp-pipeline"} and {r.project for r in runs} == {"multifeat-cmp"}
    p1, p2, p3 = by_job["phase1"][0], by_job["phase2"][0], by_job["phase3"][0]
    assert p1.config["z_dim"] == 8 and p2.config["feature"] == "bald" and p3.config["alpha"] == [1.0, 1.0, 0.1]
    assert p1.values("loss/d") and p1.values("loss/g") and p3.values("loss/d3") and p3.values("loss/g3")
    assert p2.values("loss/train") and p2.values("val/auroc")
    assert p1.media("samples") and p3.media("samples")
    for ev in by_job["eval"]:
        (table,) = ev.media("eval/summary")
        assert table["_type"] == "table-file" and (ev.folder / "files" / table["path"]).is_file()
        assert ev.values("eval/generated/joint_rate")
