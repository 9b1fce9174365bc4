"""Building and running one phase of Method A: the one way to build a phase (:func:`build_phase`),
run it, resume it from ``checkpoints/last.ckpt`` and mark it done (:func:`run_phase`).

``multifeat pipeline`` runs its three phases with these functions, and so does the benchmark
(:mod:`multifeat.bench.methods`) for methods b, c and d.

A phase is **finished** when ``checkpoints/final.ckpt`` and ``done.json`` (written atomically, after
the checkpoint) both exist. :func:`run_phase` skips a finished phase without touching its files,
resumes an unfinished one from its ``checkpoints/last.ckpt`` (saved every epoch), and starts the
rest. SIGTERM/SIGINT during a fit save ``checkpoints/last.ckpt`` at that step, print the command
that resumes and stop the run (:class:`~multifeat.callbacks.interrupt.InterruptCheckpoint`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from multifeat.callbacks.interrupt import InterruptCheckpoint
from multifeat.callbacks.negative_bank import NegativeBank
from multifeat.callbacks.progress import ConsoleProgress
from multifeat.callbacks.sample_grid import SampleGrid
from multifeat.data.guard import JointImageError, count_joint, describe_joint
from multifeat.errors import ConfigError
from multifeat.io.atomic_checkpoint_io import AtomicCheckpointIO
from multifeat.loggers import build_logger as _build_logger
from multifeat.pipeline.checks import d2_check
from multifeat.pipeline.config import (
    DEFAULT_CLASSES,
    PHASE_CALLBACKS,
    inject,
    instantiate,
    joint_free_features,
    split_spec,
)
from multifeat.pipeline.layout import PRODUCES, PhaseResult, RunLayout, config_hash, is_rank_zero
from multifeat.utils.files import atomic_write_text, ensure_writable_dir

#: ``after_fit(trainer, module, datamodule, final_checkpoint) -> dict``: extra results of a phase,
#: stored in its ``done.json`` (default: the D2 check after phase 2)
AfterFit = Callable[[Any, Any, Any, Path], dict[str, Any]]


# ----------------------------------------------------------------------------------------- console
@dataclass
class Console:
    """Where the pipeline's lines go: ``line`` to the user (one per phase start and end, the result),
    ``detail`` to the log file (the console too with ``--verbose``); ``stream`` for the progress bar."""

    line: Callable[[str], None] = print
    detail: Callable[[str], None] = print
    stream: Any = None
    verbose: bool = True
    progress_every: int = 0
    resume_command: str | None = None


def console_from(log: Callable[[str], None] | Console | None) -> Console:
    """A :class:`Console` as given, or one sending both kinds of line to ``log`` (default ``print``)."""
    if isinstance(log, Console):
        return log
    fn = log or print
    return Console(line=fn, detail=fn)


# ----------------------------------------------------------------------------------------- logger
def build_logger(cfg: dict[str, Any], layout: RunLayout, phase: str):
    """The phase's logger: a W&B run ``<name>/<phase>`` (its id kept in ``wandb_id.txt`` so that a
    resumed phase continues it), a CSV logger in the phase folder, or none."""
    kind = str(cfg.get("logger", "wandb")).lower()
    name = cfg.get("name", "method_a")
    if kind == "wandb":
        wb = dict(cfg.get("wandb") or {})
        id_file = layout.phase(phase) / "wandb_id.txt"
        if id_file.is_file():  # a resumed phase continues its W&B run
            run_id = id_file.read_text().strip()
        else:
            run_id = f"{name}-{phase}-{uuid.uuid4().hex[:8]}"
            if is_rank_zero():  # other ranks log nothing: only rank 0's logger opens the run
                atomic_write_text(id_file, run_id + "\n")
        wb.setdefault("project", "multifeat")
        reserved = sorted(set(wb) & {"name", "job_type", "id", "resume", "save_dir"})
        if reserved:
            raise ConfigError(
                f"wandb.{reserved[0]} is set by the pipeline (run name '<name>/<phase>', one run per phase, "
                f"files in the run folder); remove it from the 'wandb' section"
            )
        group = wb.pop("group", name)  # several pipelines may share one group
        return _build_logger("wandb", save_dir=str(layout.root), name=f"{name}/{phase}", group=group, job_type=phase,
                             id=run_id, resume="allow", **wb)
    return _build_logger(kind, save_dir=str(layout.phase(phase)), name="logs")


def _finish_wandb(logger: Any) -> None:
    if logger and type(logger).__name__ == "WandbLogger":
        try:
            logger.experiment.finish()
        except Exception:  # noqa: BLE001 - closing the W&B run must not fail the pipeline
            pass


# ----------------------------------------------------------------------------------------- building a phase
def build_phase(cfg: dict[str, Any], layout: RunLayout, phase: str) -> tuple[Any, Any, dict[str, Any], list]:
    """(module, datamodule, trainer kwargs, callbacks) of one phase, with the pipeline's paths injected."""
    sec = cfg.get(phase) or {}
    model_cls, model_kw = split_spec(sec.get("model"), DEFAULT_CLASSES[phase][0], f"{phase}.model")
    data_cls, data_kw = split_spec(sec.get("data"), DEFAULT_CLASSES[phase][1], f"{phase}.data")
    if phase == "phase2":
        inject(data_kw, "bank_dir", str(layout.negatives), "phase2.data")
    if phase == "phase3":
        inject(model_kw, "g1_ckpt", str(layout.final("phase1")), "phase3.model")
        inject(model_kw, "d2_ckpt", str(layout.final("phase2")), "phase3.model")
    model = instantiate(model_cls, model_kw, f"{phase}.model", LightningModule)
    data = instantiate(data_cls, data_kw, f"{phase}.data", LightningDataModule)

    cb_cfg = dict(sec.get("callbacks") or {})
    callbacks: list = []
    ck = dict(cb_cfg.get("checkpoint") or {})
    for key in ("dirpath", "save_last", "filename"):
        if key in ck:
            raise ConfigError(f"{phase}.callbacks.checkpoint.{key} is set by the pipeline; remove it")
    # save_top_k >= 1: with 0, Lightning writes last.ckpt only when fit ends, and a crash could not resume
    ck.setdefault("save_top_k", 1)
    ck.setdefault("every_n_epochs", 1)
    if ck["save_top_k"] == 0:
        raise ConfigError(f"{phase}.callbacks.checkpoint.save_top_k: 0 saves no checkpoint before the end; use 1 or more")
    callbacks.append(ModelCheckpoint(dirpath=str(layout.checkpoints(phase)), save_last=True, **ck))
    if "negative_bank" in PHASE_CALLBACKS[phase] and cb_cfg.get("negative_bank", {}) is not False:
        kw = dict(cb_cfg.get("negative_bank") or {})
        inject(kw, "bank_dir", str(layout.negatives), f"{phase}.callbacks.negative_bank")
        # the folder belongs to this unfinished phase: a fresh start (no last.ckpt) clears what a
        # crashed attempt left there; a resumed one keeps it (the callback tells them apart)
        kw.setdefault("overwrite", True)
        callbacks.append(NegativeBank(**kw))
    if "sample_grid" in PHASE_CALLBACKS[phase] and cb_cfg.get("sample_grid", {}) is not False:
        kw = dict(cb_cfg.get("sample_grid") or {})
        inject(kw, "dirpath", str(layout.samples(phase)), f"{phase}.callbacks.sample_grid")
        callbacks.append(SampleGrid(**kw))

    trainer_kw = {**(cfg.get("trainer") or {}), **(sec.get("trainer") or {})}
    for key in ("default_root_dir", "logger", "callbacks"):
        if key in trainer_kw:
            raise ConfigError(f"{phase}.trainer.{key} is set by the pipeline; remove it (use the top-level 'logger' key)")
    if trainer_kw.get("enable_checkpointing") is False:
        raise ConfigError(f"{phase}.trainer.enable_checkpointing: false would make the phase impossible to resume")
    if phase == "phase3":
        r = trainer_kw.setdefault("reload_dataloaders_every_n_epochs", 1)
        if r != 1:
            raise ConfigError("phase3.trainer.reload_dataloaders_every_n_epochs must be 1: the training data switch "
                              "from feature-2 to feature-1 images at an epoch boundary")
    return model, data, trainer_kw, callbacks


def scalar_metrics(trainer: Any) -> dict[str, float]:
    """The trainer's last logged values that are numbers, rounded to 6 digits."""
    out = {}
    for k, v in dict(trainer.callback_metrics).items():
        try:
            out[k] = round(float(v), 6)
        except (TypeError, ValueError):
            pass
    return out


# ----------------------------------------------------------------------------------------- joint-free premise
def check_joint_free(cfg: dict[str, Any], phase: str, data: Any) -> dict[str, Any] | None:
    """With ``joint_free: [f1, f2, ...]`` in the config: count the training images of ``data`` that carry
    all those features (the benchmark's guard, :func:`multifeat.data.guard.count_joint`) and raise
    :class:`~multifeat.data.guard.JointImageError` naming the phase, the set and the count when
    there is one. Returns the counts (None without ``joint_free``)."""
    feats = joint_free_features(cfg)
    if not feats:
        return None
    counts = count_joint(data, feats)
    if counts["joint"]:
        raise JointImageError(
            f"{phase}: the config declares joint_free: [{', '.join(feats)}], but {phase}'s training data hold "
            f"{describe_joint(counts, feats)}. "
            f"Filter them out in {phase}.data (e.g. require: {{{feats[0]}: true, {feats[1]}: false}}), or remove "
            "joint_free from the config if jointly-featured training images are intended"
        )
    return counts


def joint_free_record(cfg: dict[str, Any], data: Any, counts: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``done.json`` keeps of the joint-free check: the features, the counts of the training set and,
    per feature, how many training images carry it (``per_feature``; 0 for feature 2 in phase 1 makes
    G1's feature-2 rate a false-positive probe of the judge, see :mod:`multifeat.pipeline.summary`)."""
    if counts is None:
        return None
    feats = joint_free_features(cfg)
    return {"features": feats, **{k: counts[k] for k in ("images", "labelled", "joint", "generated") if k in counts},
            "per_feature": {f: int(count_joint(data, [f])["joint"]) for f in feats}}


# ----------------------------------------------------------------------------------------- running a phase
def _skip(layout: RunLayout, phase: str, con: Console, settings: str, stale: str) -> PhaseResult | None:
    """The result of a finished phase, or None when it must run (not finished, or ``stale="redo"``
    and its settings changed: then its folder is cleared)."""
    if not layout.finished(phase):
        return None
    done = layout.read_done(phase)
    if done.get("config_hash") and done["config_hash"] != settings:
        if stale == "redo":
            con.line(f"{phase}: its settings changed since it finished; training it again")
            shutil.rmtree(layout.phase(phase))
            return None
        con.line(f"{phase}: its settings changed since it finished; keeping the finished results "
                 f"(delete {layout.phase(phase)} to run it again)")
    con.line(f"{phase}: finished earlier, skipped ({layout.final(phase)})")
    return PhaseResult(phase, "skipped", done.get("seconds", 0.0), str(layout.final(phase)),
                       done.get("samples"), done.get("metrics", {}), done.get("extra", {}))


def run_phase(cfg: dict[str, Any], layout: RunLayout, phase: str, log: Callable[[str], None] | Console | None = None,
              *, after_fit: AfterFit | None = None, stale: str = "keep") -> PhaseResult:
    """Run (or resume, or skip) one training phase.

    ``after_fit`` computes the phase's extra results from the trained module (stored in ``done.json``;
    default: :func:`~multifeat.pipeline.checks.d2_check` after phase 2, nothing otherwise).
    ``stale`` says what a finished phase whose settings changed gets: ``keep`` (the pipeline: keep
    it and say so) or ``redo`` (the benchmark: train it again).
    """
    if stale not in ("keep", "redo"):
        raise ConfigError(f"stale must be 'keep' or 'redo', got {stale!r}")
    con = console_from(log)
    settings = config_hash(cfg.get(phase) or {})
    skipped = _skip(layout, phase, con, settings, stale)
    if skipped is not None:
        return skipped

    for folder in ("checkpoints",) + (("negatives", "samples") if phase == "phase1" else ("samples",)):
        ensure_writable_dir(layout.phase(phase) / folder)
    seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)
    model, data, trainer_kw, callbacks = build_phase(cfg, layout, phase)
    counts = check_joint_free(cfg, phase, data)
    if counts is not None:
        con.detail(f"{phase}: joint-free check passed: {counts['images']} training images, none with all of "
                   f"{', '.join(joint_free_features(cfg))} ({counts['generated']} generated, unlabelled)")
    last = layout.last(phase)
    resume = last if last.is_file() else None
    if is_rank_zero():
        atomic_write_text(layout.phase(phase) / "config.json", json.dumps(cfg.get(phase) or {}, indent=2, default=str) + "\n")
    logger = build_logger(cfg, layout, phase)
    trainer_kw.setdefault("plugins", [AtomicCheckpointIO()])
    callbacks.append(InterruptCheckpoint(dirpath=str(layout.checkpoints(phase)), filename=last.name, label=phase,
                                         resume_command=con.resume_command or "the same multifeat pipeline command",
                                         say=con.line))
    if not con.verbose:
        # Lightning's bar redraws with carriage returns: in the log file it would be noise
        if trainer_kw.get("enable_progress_bar", True) is not False:
            callbacks.append(ConsoleProgress(phase, stream=con.stream, every=con.progress_every))
        trainer_kw["enable_progress_bar"] = False
    trainer = Trainer(default_root_dir=str(layout.phase(phase)), logger=logger, callbacks=callbacks, **trainer_kw)
    con.line(f"{phase}: {'resuming from ' + str(resume) if resume else 'starting'} -> {layout.phase(phase)} ({PRODUCES[phase]})")
    t0 = time.time()
    try:
        trainer.fit(model, datamodule=data, ckpt_path=str(resume) if resume else None)
    finally:
        _finish_wandb(logger)
    if trainer.interrupted:
        raise KeyboardInterrupt
    seconds = time.time() - t0

    # final checkpoint (atomic), then the marker. Every rank calls save_checkpoint (a collective
    # call under DDP); only rank 0 writes, renames and writes the marker, and the others wait for it.
    final = layout.final(phase)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    trainer.save_checkpoint(str(tmp))
    if not trainer.is_global_zero:
        trainer.strategy.barrier("multifeat-pipeline-phase-done")
        return PhaseResult(phase, "resumed" if resume else "ran", seconds, str(final), module=model)
    os.replace(tmp, final)
    metrics = scalar_metrics(trainer)
    samples = layout.samples(phase) / "latest.png"
    if after_fit is not None:
        extra = dict(after_fit(trainer, model, data, final) or {})
    elif phase == "phase2":
        extra = d2_check(final, data, layout, con.detail)
        samples = Path(extra.get("grid", samples))
    else:
        extra = {}
    prev = layout.read_done(phase) if layout.done(phase).is_file() else {}
    done = {
        "phase": phase,
        "final_checkpoint": str(final),
        "epochs": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "seconds": round(seconds + float(prev.get("seconds", 0.0)), 1),
        "resumed": resume is not None,
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "samples": str(samples) if samples.is_file() else None,
        "metrics": metrics,
        "extra": extra,
        "config_hash": settings,
        "joint_free": joint_free_record(cfg, data, counts),
    }
    atomic_write_text(layout.done(phase), json.dumps(done, indent=2) + "\n")
    trainer.strategy.barrier("multifeat-pipeline-phase-done")
    con.line(f"{phase}: finished in {seconds:.1f} s -> {final}")
    return PhaseResult(phase, "resumed" if resume else "ran", seconds, str(final), done["samples"], metrics, extra, module=model)


__all__ = ["AfterFit", "Console", "build_logger", "build_phase", "check_joint_free", "console_from", "joint_free_record",
           "run_phase", "scalar_metrics"]
