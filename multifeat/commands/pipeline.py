"""``multifeat pipeline``: Method A end to end — phase 1 -> phase 2 -> phase 3 -> evaluation — in one run folder.

Usage::

    multifeat pipeline --config experiments/method_a.yaml [--run-dir runs/demo]
                       [--set phase1.trainer.max_epochs=2 --set phase3.model.f=hinge ...]

Run folder (``--run-dir``, default ``runs/<name>``)::

    phase1/{checkpoints,negatives,samples}   G1/D1, the negative bank, sample grids
    phase2/{checkpoints,samples}             D2, a grid of D2's verdicts per image source
    phase3/{checkpoints,samples}             G3/D3/D2/H, sample grids
    eval/{report.md,metrics.json,grids/}     feature rates, joint rate, FID/KID (multifeat evaluate)
    summary.md, summary.json                 what ran, where everything went, the key numbers

Every phase folder gets ``config.json`` (the settings it ran with) and, once finished, ``done.json``.
A phase is **finished** when ``checkpoints/final.ckpt`` and ``done.json`` (written atomically, after
the checkpoint) both exist. A re-run skips finished phases without touching their files, resumes an
unfinished one from its ``checkpoints/last.ckpt`` (saved every epoch), and starts the rest.
Artifacts pass by path: phase 2 reads ``phase1/negatives``; phase 3 reads ``phase1/checkpoints/final.ckpt``
and ``phase2/checkpoints/final.ckpt``; evaluation reads ``phase3/checkpoints/final.ckpt``.

Config (YAML; see ``experiments/method_a.yaml``)::

    name: method_a          # run name: default folder runs/<name>, the W&B group
    seed: 0                 # seed_everything(seed) before each phase
    logger: wandb           # wandb (offline without an account) | csv | none
    wandb: {project: multifeat}
    trainer: {...}          # Trainer arguments shared by every phase
    phase1: {model: {...}, data: {...}, trainer: {...}, callbacks: {negative_bank: {...}, sample_grid: {...}}}
    phase2: {model: {...}, data: {...}, trainer: {...}}
    phase3: {model: {...}, data: {...}, trainer: {...}, callbacks: {sample_grid: {...}}}
    eval: {enabled: true, baseline: true, args: {features: "bald,beard", n: 256}}

``model`` / ``data`` are the keyword arguments of the phase's default class (Phase1GAN /
AttributeDataModule, FeatureClassifier / FeatureClassifierDataModule, Phase3GAN / SwitchingDataModule)
or ``{class_path: ..., init_args: {...}}`` for another class. Paths between phases (``bank_dir``,
``g1_ckpt``, ``d2_ckpt``), the checkpoint callback, the sample-grid folders, the logger and
``default_root_dir`` are set by the pipeline. ``callbacks.<name>: false`` drops a callback.
``eval.args`` are ``multifeat evaluate`` options without the dashes (``evaluator-steps: 300``).

Overrides: ``--set KEY=VALUE`` (repeatable), ``KEY`` a dotted path into the config and ``VALUE``
parsed as YAML: ``--set phase1.trainer.max_epochs=2``, ``--set phase3.model.alpha=[1,1,0.2]``,
``--set logger=csv``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multifeat.errors import ConfigError, MultifeatError
from multifeat.utils.config import set_dotted

PHASES = ("phase1", "phase2", "phase3")
TOP_KEYS = ("name", "seed", "logger", "wandb", "trainer", *PHASES, "eval")
PHASE_KEYS = ("model", "data", "trainer", "callbacks")
DEFAULT_CLASSES = {
    "phase1": ("multifeat.phases.phase1.Phase1GAN", "multifeat.data.datamodule.AttributeDataModule"),
    "phase2": ("multifeat.phases.feature_classifier.FeatureClassifier", "multifeat.data.classifier_data.FeatureClassifierDataModule"),
    "phase3": ("multifeat.phases.phase3.Phase3GAN", "multifeat.data.switching.SwitchingDataModule"),
}
PHASE_CALLBACKS = {"phase1": ("negative_bank", "sample_grid"), "phase2": (), "phase3": ("sample_grid",)}
PRODUCES = {"phase1": "G1/D1 and the negative bank", "phase2": "the feature classifier D2", "phase3": "G3 (with H)"}
FINAL = "final.ckpt"
DONE = "done.json"


# ----------------------------------------------------------------------------------------- config
def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read the pipeline YAML, apply ``KEY=VALUE`` overrides, validate the top-level layout."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pipeline config '{p}' does not exist")
    try:
        cfg = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"pipeline config '{p}' is not valid YAML: {e}") from e
    if not isinstance(cfg, dict):
        raise ConfigError(f"pipeline config '{p}' must be a mapping with keys {', '.join(TOP_KEYS)}")
    for item in overrides or []:
        apply_override(cfg, item)
    validate_config(cfg, str(p))
    return cfg


def apply_override(cfg: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override in place (value parsed as YAML; missing sections are made)."""
    set_dotted(cfg, item, create=True, example="phase1.trainer.max_epochs=2", what="pipeline config")


def validate_config(cfg: dict[str, Any], where: str = "config") -> None:
    unknown = [k for k in cfg if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; expected {', '.join(TOP_KEYS)}")
    for phase in PHASES:
        sec = cfg.get(phase) or {}
        if not isinstance(sec, dict):
            raise ConfigError(f"{where}: '{phase}' must be a mapping with keys {', '.join(PHASE_KEYS)}")
        bad = [k for k in sec if k not in PHASE_KEYS]
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad} in '{phase}'; expected {', '.join(PHASE_KEYS)}")
        for k in ("model", "data", "trainer", "callbacks"):
            if sec.get(k) is not None and not isinstance(sec[k], dict):
                raise ConfigError(f"{where}: '{phase}.{k}' must be a mapping, got {sec[k]!r}")
        for name in (sec.get("callbacks") or {}):
            if name not in (*PHASE_CALLBACKS[phase], "checkpoint"):
                raise ConfigError(f"{where}: unknown callback '{phase}.callbacks.{name}'; "
                                  f"expected {', '.join((*PHASE_CALLBACKS[phase], 'checkpoint'))}")
    if str(cfg.get("logger", "wandb")).lower() not in ("wandb", "csv", "none", "false", "off"):
        raise ConfigError(f"{where}: logger must be wandb, csv or none, got {cfg.get('logger')!r}")
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}: seed must be an integer, got {seed!r}")
    name = cfg.get("name", "method_a")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError(f"{where}: name must be a plain folder name, got {name!r}")


def _import(path: str, what: str):
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ConfigError(f"{what}: class_path '{path}' must be a full dotted path, e.g. multifeat.phases.phase1.Phase1GAN")
    try:
        return getattr(importlib.import_module(module_name), name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"{what}: cannot import '{path}' ({e})") from e
    except AttributeError as e:
        raise ConfigError(f"{what}: module '{module_name}' has no '{name}'") from e


def split_spec(spec: dict[str, Any] | None, default_class: str, what: str) -> tuple[str, dict[str, Any]]:
    """``{class_path, init_args}`` or plain kwargs -> (class path, kwargs)."""
    spec = copy.deepcopy(spec or {})
    if "class_path" in spec:
        extra = set(spec) - {"class_path", "init_args"}
        if extra:
            raise ConfigError(f"{what}: with class_path only init_args may follow, found {sorted(extra)}")
        return str(spec["class_path"]), dict(spec.get("init_args") or {})
    return default_class, spec


def _inject(kwargs: dict[str, Any], key: str, value: Any, what: str) -> None:
    if key in kwargs and kwargs[key] not in (None, value):
        raise ConfigError(f"{what}.{key} is set by the pipeline (to {value!r}); remove it from the config (it says {kwargs[key]!r})")
    kwargs[key] = value


def _instantiate(class_path: str, kwargs: dict[str, Any], what: str):
    cls = _import(class_path, what)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{what}: {class_path} does not accept these arguments ({e})") from e


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------- run folder
@dataclass
class RunLayout:
    root: Path

    def phase(self, name: str) -> Path:
        return self.root / name

    def checkpoints(self, name: str) -> Path:
        return self.root / name / "checkpoints"

    def final(self, name: str) -> Path:
        return self.checkpoints(name) / FINAL

    def last(self, name: str) -> Path:
        return self.checkpoints(name) / "last.ckpt"

    def done(self, name: str) -> Path:
        return self.root / name / DONE

    def samples(self, name: str) -> Path:
        return self.root / name / "samples"

    @property
    def negatives(self) -> Path:
        return self.root / "phase1" / "negatives"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def finished(self, name: str) -> bool:
        if name == "eval":
            return (self.eval / DONE).is_file()
        return self.final(name).is_file() and self.done(name).is_file()

    def read_done(self, name: str) -> dict[str, Any]:
        path = self.eval / DONE if name == "eval" else self.done(name)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}


@dataclass
class PhaseResult:
    name: str
    status: str  # "ran", "resumed", "skipped"
    seconds: float = 0.0
    checkpoint: str | None = None
    samples: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- distributed runs
def is_rank_zero() -> bool:
    """Whether this process writes the run folder: global rank 0, or the only process.

    Under DDP (``trainer.devices > 1`` or ``num_nodes > 1``) Lightning starts the other ranks by
    running the same command again; they run every phase's ``fit`` with rank 0 and write nothing.
    """
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


# ----------------------------------------------------------------------------------------- building a phase
def build_logger(cfg: dict[str, Any], layout: RunLayout, phase: str):
    from multifeat.loggers import build_logger as _build

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
                from multifeat.utils.files import atomic_write_text

                atomic_write_text(id_file, run_id + "\n")
        wb.setdefault("project", "multifeat")
        reserved = sorted(set(wb) & {"name", "job_type", "id", "resume", "save_dir"})
        if reserved:
            raise ConfigError(
                f"wandb.{reserved[0]} is set by the pipeline (run name '<name>/<phase>', one run per phase, "
                f"files in the run folder); remove it from the 'wandb' section"
            )
        group = wb.pop("group", name)  # several pipelines may share one group
        return _build("wandb", save_dir=str(layout.root), name=f"{name}/{phase}", group=group, job_type=phase,
                      id=run_id, resume="allow", **wb)
    return _build(kind, save_dir=str(layout.phase(phase)), name="logs")


def _finish_wandb(logger: Any) -> None:
    if logger and type(logger).__name__ == "WandbLogger":
        try:
            logger.experiment.finish()
        except Exception:  # noqa: BLE001 - closing the W&B run must not fail the pipeline
            pass


def build_phase(cfg: dict[str, Any], layout: RunLayout, phase: str) -> tuple[Any, Any, dict[str, Any], list]:
    """(module, datamodule, trainer kwargs, callbacks) of one phase, with the pipeline's paths injected."""
    sec = cfg.get(phase) or {}
    model_cls, model_kw = split_spec(sec.get("model"), DEFAULT_CLASSES[phase][0], f"{phase}.model")
    data_cls, data_kw = split_spec(sec.get("data"), DEFAULT_CLASSES[phase][1], f"{phase}.data")
    if phase == "phase2":
        _inject(data_kw, "bank_dir", str(layout.negatives), "phase2.data")
    if phase == "phase3":
        _inject(model_kw, "g1_ckpt", str(layout.final("phase1")), "phase3.model")
        _inject(model_kw, "d2_ckpt", str(layout.final("phase2")), "phase3.model")
    model = _instantiate(model_cls, model_kw, f"{phase}.model")
    data = _instantiate(data_cls, data_kw, f"{phase}.data")

    from lightning.pytorch.callbacks import ModelCheckpoint

    cb_cfg = dict(sec.get("callbacks") or {})
    callbacks: list = []
    ck = cb_cfg.get("checkpoint") or {}
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
        from multifeat.callbacks.negative_bank import NegativeBank

        kw = dict(cb_cfg.get("negative_bank") or {})
        _inject(kw, "bank_dir", str(layout.negatives), f"{phase}.callbacks.negative_bank")
        # the folder belongs to this unfinished phase: a fresh start (no last.ckpt) clears what a
        # crashed attempt left there; a resumed one keeps it (the callback tells them apart)
        kw.setdefault("overwrite", True)
        callbacks.append(NegativeBank(**kw))
    if "sample_grid" in PHASE_CALLBACKS[phase] and cb_cfg.get("sample_grid", {}) is not False:
        from multifeat.callbacks.sample_grid import SampleGrid

        kw = dict(cb_cfg.get("sample_grid") or {})
        _inject(kw, "dirpath", str(layout.samples(phase)), f"{phase}.callbacks.sample_grid")
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


def _scalar_metrics(trainer: Any) -> dict[str, float]:
    out = {}
    for k, v in dict(trainer.callback_metrics).items():
        try:
            out[k] = round(float(v), 6)
        except (TypeError, ValueError):
            pass
    return out


def run_phase(cfg: dict[str, Any], layout: RunLayout, phase: str, log: Callable[[str], None]) -> PhaseResult:
    """Run (or resume, or skip) one training phase."""
    from lightning.pytorch import Trainer, seed_everything

    from multifeat.utils.files import atomic_write_text, ensure_writable_dir

    if layout.finished(phase):
        done = layout.read_done(phase)
        if done.get("config_hash") and done["config_hash"] != config_hash(cfg.get(phase) or {}):
            log(f"{phase}: its settings changed since it finished; keeping the finished results "
                f"(delete {layout.phase(phase)} to run it again)")
        log(f"{phase}: finished earlier, skipped ({layout.final(phase)})")
        return PhaseResult(phase, "skipped", done.get("seconds", 0.0), str(layout.final(phase)),
                           done.get("samples"), done.get("metrics", {}), done.get("extra", {}))

    for folder in ("checkpoints",) + (("negatives", "samples") if phase == "phase1" else ("samples",)):
        ensure_writable_dir(layout.phase(phase) / folder)
    seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)
    model, data, trainer_kw, callbacks = build_phase(cfg, layout, phase)
    last = layout.last(phase)
    resume = last if last.is_file() else None
    if is_rank_zero():
        atomic_write_text(layout.phase(phase) / "config.json", json.dumps(cfg.get(phase) or {}, indent=2, default=str) + "\n")
    logger = build_logger(cfg, layout, phase)
    from multifeat.io.atomic_checkpoint_io import AtomicCheckpointIO

    trainer_kw.setdefault("plugins", [AtomicCheckpointIO()])
    trainer = Trainer(default_root_dir=str(layout.phase(phase)), logger=logger, callbacks=callbacks, **trainer_kw)
    log(f"{phase}: {'resuming from ' + str(resume) if resume else 'starting'} -> {layout.phase(phase)} ({PRODUCES[phase]})")
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
        return PhaseResult(phase, "resumed" if resume else "ran", seconds, str(final))
    os.replace(tmp, final)
    metrics = _scalar_metrics(trainer)
    extra: dict[str, Any] = {}
    samples = layout.samples(phase) / "latest.png"
    if phase == "phase2":
        extra = d2_check(final, data, layout, log)
        samples = Path(extra.get("grid", samples))
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
        "config_hash": config_hash(cfg.get(phase) or {}),
    }
    atomic_write_text(layout.done(phase), json.dumps(done, indent=2) + "\n")
    trainer.strategy.barrier("multifeat-pipeline-phase-done")
    log(f"{phase}: finished in {seconds:.1f} s -> {final}")
    return PhaseResult(phase, "resumed" if resume else "ran", seconds, str(final), done["samples"], metrics, extra)


# ----------------------------------------------------------------------------------------- phase-2 check
def d2_check(d2_ckpt: Path, data: Any, layout: RunLayout, log: Callable[[str], None], per_row: int = 8) -> dict[str, Any]:
    """D2's mean probability per validation source and on G1's samples, and a grid of them.

    Grid rows (``phase2/samples/d2_check.png``): validation images of each source (positive,
    real_negative, bank, degraded) and G1 samples, ``per_row`` each. A good D2 is high on positives
    and on G1's bald samples, low on every negative source.
    """
    import torch

    from multifeat.data.common import SOURCE_NAMES
    from multifeat.io.checkpoints import load_phase_module
    from multifeat.utils.images import save_grid

    d2 = load_phase_module(d2_ckpt, expect_phase="phase2")
    out: dict[str, Any] = {}
    rows: list[torch.Tensor] = []
    try:
        loader = data.val_dataloader()
    except Exception:  # noqa: BLE001 - the diagnostic is optional
        loader = None
    sums, counts, firsts = {}, {}, {}
    with torch.no_grad():
        for batch in loader or []:
            if not isinstance(batch, dict) or "source" not in batch:
                break
            p = d2(batch["image"]).float().reshape(-1)
            for sid in batch["source"].unique().tolist():
                m = batch["source"] == sid
                name = SOURCE_NAMES[sid] if sid < len(SOURCE_NAMES) else str(sid)
                sums[name] = sums.get(name, 0.0) + float(p[m].sum())
                counts[name] = counts.get(name, 0) + int(m.sum())
                have = firsts.setdefault(name, [])
                if sum(len(t) for t in have) < per_row:
                    have.append(batch["image"][m][: per_row - sum(len(t) for t in have)])
        for name in SOURCE_NAMES:
            if name in counts:
                out[f"d2/val_{name}_mean"] = round(sums[name] / counts[name], 4)
                rows.append(torch.cat(firsts[name])[:per_row])
        if layout.final("phase1").is_file():
            g1 = load_phase_module(layout.final("phase1"), expect_phase="phase1")
            g1_images = g1.sample(64, seed=0)
            out["d2/g1_samples_mean"] = round(float(d2(g1_images).float().mean()), 4)
            rows.append(g1_images[:per_row])
    if rows:
        rows = [torch.cat([r, r.new_full((per_row - len(r), *r.shape[1:]), -1.0)]) if len(r) < per_row else r for r in rows]
        grid = layout.samples("phase2") / "d2_check.png"
        save_grid(torch.cat(rows).float().cpu(), grid, nrow=per_row, upscale=2 if rows[0].shape[-1] <= 64 else 1)
        out["grid"] = str(grid)
        out["grid_rows"] = [n for n in SOURCE_NAMES if n in counts] + (["g1_samples"] if "d2/g1_samples_mean" in out else [])
    shown = ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in out.items() if k.startswith("d2/"))
    if shown:
        log(f"phase2: mean D2 probability: {shown}")
    return out


# ----------------------------------------------------------------------------------------- evaluation
def _eval_argv(args: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for k, v in args.items():
        flag = "--" + str(k).replace("_", "-")
        if v is None or v is False:
            continue
        if v is True:
            argv.append(flag)
        elif isinstance(v, (list, tuple)):
            argv += [flag, ",".join(str(x) for x in v)]
        else:
            argv += [flag, str(v)]
    return argv


def run_eval(cfg: dict[str, Any], layout: RunLayout, log: Callable[[str], None]) -> PhaseResult | None:
    """Evaluate G3 (and G1 as the baseline) with ``multifeat evaluate``; grids of every phase into eval/grids."""
    ev = dict(cfg.get("eval") or {})
    if ev.get("enabled", True) is False:
        log("eval: disabled in the config")
        return None
    unknown = set(ev) - {"enabled", "baseline", "args", "grid_n"}
    if unknown:
        raise ConfigError(f"eval: unknown key(s) {sorted(unknown)}; expected enabled, baseline, args, grid_n")
    if layout.finished("eval"):
        done = layout.read_done("eval")
        log(f"eval: finished earlier, skipped ({layout.eval / 'report.md'})")
        return PhaseResult("eval", "skipped", done.get("seconds", 0.0), None, None, done.get("metrics", {}), done.get("extra", {}))
    try:
        from multifeat.commands import evaluate as evaluate_cmd
    except ImportError as e:
        log(f"eval: skipped, the evaluation command is not available in this build ({e})")
        return None
    from multifeat.utils.files import atomic_write_text, ensure_writable_dir

    t0 = time.time()
    grids = write_phase_grids(layout, n=int(ev.get("grid_n", 64)))
    args = dict(ev.get("args") or {})
    for key in ("generator", "images", "out"):
        if key in args:
            raise ConfigError(f"eval.args.{key} is set by the pipeline; remove it")
    if str(cfg.get("logger", "wandb")).lower() == "wandb":
        args.setdefault("logger", "wandb")
        args.setdefault("wandb-group", cfg.get("name", "method_a"))
        args.setdefault("wandb-project", (cfg.get("wandb") or {}).get("project", "multifeat"))
    runs = [("phase3", layout.eval)]
    if ev.get("baseline", True):
        runs.append(("phase1", layout.eval / "baseline_phase1"))
    metrics: dict[str, Any] = {}
    for phase, out in runs:
        ensure_writable_dir(out)
        argv = ["--generator", str(layout.final(phase)), "--out", str(out), *_eval_argv(args)]
        log(f"eval: multifeat evaluate {' '.join(argv)}")
        code = evaluate_cmd.main(argv)
        if code:
            raise MultifeatError(f"evaluation of {phase} failed (exit code {code})")
        try:
            metrics[phase] = json.loads((out / "metrics.json").read_text())
        except (OSError, ValueError):
            metrics[phase] = {}
    seconds = time.time() - t0
    extra = {"grids": grids, "report": str(layout.eval / "report.md"), "metrics_json": str(layout.eval / "metrics.json")}
    atomic_write_text(layout.eval / DONE, json.dumps({"phase": "eval", "seconds": round(seconds, 1), "metrics": metrics,
                                                       "extra": extra}, indent=2, default=str) + "\n")
    return PhaseResult("eval", "ran", seconds, None, None, metrics, extra)


def write_phase_grids(layout: RunLayout, n: int = 64, seed: int = 0) -> dict[str, str]:
    """Same-seed sample grids of G1 and G3 (and the D2 check) side by side in ``eval/grids``."""
    import shutil

    from multifeat.io.checkpoints import load_phase_module
    from multifeat.utils.files import ensure_writable_dir
    from multifeat.utils.images import save_grid

    d = ensure_writable_dir(layout.eval / "grids")
    out = {}
    for phase in ("phase1", "phase3"):
        if layout.final(phase).is_file():
            module = load_phase_module(layout.final(phase))
            images = module.sample(n, seed=seed).float().cpu()
            path = d / f"{phase}.png"
            save_grid(images, path, upscale=2 if images.shape[-1] <= 64 else 1)
            out[phase] = str(path)
    check = layout.samples("phase2") / "d2_check.png"
    if check.is_file():
        shutil.copyfile(check, d / "phase2_d2_check.png")
        out["phase2"] = str(d / "phase2_d2_check.png")
    return out


# ----------------------------------------------------------------------------------------- summary
def _rate(m: dict[str, Any], key: str) -> str:
    v = m.get(key)
    if isinstance(v, dict):
        v = v.get("rate", v.get("value"))
    return f"{100 * float(v):.1f} %" if isinstance(v, (int, float)) else "n/a"


def write_summary(cfg: dict[str, Any], layout: RunLayout, results: list[PhaseResult], total_seconds: float) -> tuple[Path, Path]:
    from multifeat.utils.files import atomic_write_text

    name = cfg.get("name", "method_a")
    data = {
        "name": name,
        "run_dir": str(layout.root),
        "total_seconds": round(total_seconds, 1),
        "phases": [r.__dict__ for r in results],
    }
    lines = [f"# Method A run `{name}`", "", f"Run folder: `{layout.root}`; this invocation took {total_seconds:.0f} s.", ""]
    lines += ["| phase | status | time (s) | checkpoint | samples |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.checkpoint or '-'} | {r.samples or '-'} |")
    lines.append("")
    by = {r.name: r for r in results}
    if "phase2" in by:
        d2 = {k: v for k, v in by["phase2"].extra.items() if k.startswith("d2/")}
        if d2:
            lines += ["## D2 (feature classifier)", ""]
            lines += [f"- mean D2 on {k[3:].replace('_mean', '')}: {v:.3f}" for k, v in d2.items()]
            lines.append("")
    if "phase3" in by:
        m = by["phase3"].metrics
        keys = ["d2/fake_mean", "d3/real_mean", "d3/fake_mean", "loss/d3", "loss/g3", "phase3/adain_active"]
        shown = [f"- {k} (last step): {m[k]:.4f}" for k in keys if k in m]
        if shown:
            lines += ["## Phase 3 (last logged values)", "", *shown, ""]
    if "eval" in by:
        ev = by["eval"]
        lines += ["## Evaluation", "", f"Report: `{ev.extra.get('report')}`, numbers: `{ev.extra.get('metrics_json')}`", ""]
        for phase, m in ev.metrics.items():
            if isinstance(m, dict) and m:
                fid = m.get("fid")
                lines.append(f"- {'G3 (phase 3)' if phase == 'phase3' else 'G1 (phase 1, baseline)'}: joint rate {_rate(m, 'joint')}"
                             + "".join(f", {f} {_rate(m.get('feature_rates', {}), f)}" for f in (m.get("features") or []))
                             + (f", FID {fid:.3g}" if isinstance(fid, (int, float)) else ""))
        grids = ev.extra.get("grids") or {}
        if grids:
            lines += ["", "Grids (same noise for G1 and G3): " + ", ".join(f"`{p}`" for p in grids.values())]
        lines.append("")
    md = atomic_write_text(layout.root / "summary.md", "\n".join(lines))
    js = atomic_write_text(layout.root / "summary.json", json.dumps(data, indent=2, default=str) + "\n")
    return md, js


# ----------------------------------------------------------------------------------------- command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="multifeat pipeline",
        description="Method A end to end: phase 1 -> 2 -> 3 -> evaluation in one run folder; a re-run resumes "
        "at the first unfinished phase and never overwrites finished ones.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="YAML", help="pipeline config, e.g. experiments/method_a.yaml")
    p.add_argument("--run-dir", metavar="DIR", help="run folder (default runs/<name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (dotted key, YAML value); repeatable")
    p.add_argument("--stop-after", choices=(*PHASES, "eval"), help="stop after this step")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    from multifeat.utils.files import ensure_writable_dir

    root = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.get("name", "method_a")
    layout = RunLayout(ensure_writable_dir(root))

    def log(msg: str) -> None:
        print(f"[pipeline] {msg}", flush=True)

    t0 = time.time()
    results: list[PhaseResult] = []
    for phase in PHASES:
        results.append(run_phase(cfg, layout, phase, log))
        if args.stop_after == phase:
            break
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # the evaluation and the summary run in rank 0 alone, outside the training's process group
        dist.destroy_process_group()
    if not is_rank_zero():
        return 0
    if args.stop_after in (None, "eval"):
        r = run_eval(cfg, layout, log)
        if r is not None:
            results.append(r)
    total = time.time() - t0
    md, js = write_summary(cfg, layout, results, total)

    print()
    print(f"Run folder: {layout.root}  ({total:.0f} s)")
    for r in results:
        where = r.samples or (", ".join((r.extra.get("grids") or {}).values()) if r.name == "eval" else None)
        print(f"  {r.name:<7} {r.status:<8} {r.checkpoint or ''}")
        if where:
            print(f"          grids: {where}")
        if r.name == "eval":
            print(f"          report: {r.extra.get('report')}  numbers: {r.extra.get('metrics_json')}")
    print(f"Summary: {md} (+ {js.name})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from multifeat.cli import main as cli_main

    sys.exit(cli_main(["pipeline", *sys.argv[1:]]))
