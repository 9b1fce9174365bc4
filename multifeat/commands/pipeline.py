"""``multifeat pipeline``: Method A end to end — phase 1 -> phase 2 -> phase 3 -> evaluation — in one run folder.

Usage::

    multifeat pipeline --config experiments/method_a.yaml [--run-dir runs/demo]
                       [--set phase1.trainer.max_epochs=2 --set phase3.model.f=hinge ...] [--verbose]

Run folder (``--run-dir``, default ``runs/<name>``)::

    phase1/{checkpoints,negatives,samples}   G1/D1, the negative bank, sample grids
    phase2/{checkpoints,samples}             D2, a grid of D2's verdicts per image source
    phase3/{checkpoints,samples}             G3/D3/D2/H, sample grids
    eval/{report.md,metrics.json,grids/}     feature rates, joint rate, FID/KID (multifeat evaluate)
    summary.md, summary.json                 what ran, where everything went, the key numbers
    pipeline.log                             what Lightning, W&B and the evaluation printed (``--verbose``: the console)

Every phase folder gets ``config.json`` (the settings it ran with) and, once finished, ``done.json``.
A phase is **finished** when ``checkpoints/final.ckpt`` and ``done.json`` (written atomically, after
the checkpoint) both exist. A re-run skips finished phases without touching their files, resumes an
unfinished one from its ``checkpoints/last.ckpt`` (saved every epoch), and starts the rest.
Artifacts pass by path: phase 2 reads ``phase1/negatives``; phase 3 reads ``phase1/checkpoints/final.ckpt``
and ``phase2/checkpoints/final.ckpt``; evaluation reads ``phase3/checkpoints/final.ckpt``. The
evaluation is redone when a checkpoint it evaluated changed (``eval/done.json`` keeps their SHA-256).
SIGTERM/SIGINT during a phase save ``checkpoints/last.ckpt`` at that step, print the command that
resumes and exit with 143/130 (:class:`~multifeat.callbacks.interrupt.InterruptCheckpoint`).

Config (YAML; see ``experiments/method_a.yaml``)::

    name: method_a          # run name: default folder runs/<name>, the W&B group
    seed: 0                 # seed_everything(seed) before each phase
    logger: wandb           # wandb (offline without an account) | csv | none
    wandb: {project: multifeat}
    joint_free: [bald, beard]  # optional: no training set of any phase may hold an image with all of them
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
from multifeat.utils.config import read_yaml_mapping, set_dotted

PHASES = ("phase1", "phase2", "phase3")
TOP_KEYS = ("name", "seed", "logger", "wandb", "joint_free", "data_root", "trainer", *PHASES, "eval")
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
    cfg = read_yaml_mapping(path, "pipeline config", f"with keys {', '.join(TOP_KEYS)}")
    for item in overrides or []:
        apply_override(cfg, item)
    validate_config(cfg, str(Path(path)))
    apply_data_root(cfg)
    return cfg


def apply_data_root(cfg: dict[str, Any]) -> None:
    """The top-level ``data_root`` fills ``<phase>.data.root`` of every phase that does not set its own
    (in ``init_args`` when the data section names a ``class_path``); in place."""
    root = cfg.get("data_root")
    if root is None:
        return
    for phase in PHASES:
        sec = cfg.get(phase)
        if sec is None:
            sec = cfg[phase] = {}
        data = sec.get("data")
        if data is None:
            data = sec["data"] = {}
        target = data.setdefault("init_args", {}) if "class_path" in data else data
        if target is None:
            target = data["init_args"] = {}
        target.setdefault("root", str(root))


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
    root = cfg.get("data_root")
    if root is not None and (not isinstance(root, str) or not root.strip()):
        raise ConfigError(f"{where}: data_root must be a folder path (it fills every phase's data.root), got {root!r}")
    jf = cfg.get("joint_free")
    if jf is not None and (not isinstance(jf, list) or len(jf) < 2 or not all(isinstance(f, str) and f for f in jf)
                           or len(set(jf)) != len(jf)):
        raise ConfigError(f"{where}: joint_free must list two or more distinct feature names, e.g. [bald, beard]; got {jf!r}")


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


# ----------------------------------------------------------------------------------------- joint-free premise
def joint_free_features(cfg: dict[str, Any]) -> list[str]:
    return [str(f) for f in (cfg.get("joint_free") or [])]


def check_joint_free(cfg: dict[str, Any], phase: str, data: Any) -> dict[str, Any] | None:
    """With ``joint_free: [f1, f2, ...]`` in the config: count the training images of ``data`` that carry
    all those features (the benchmark's guard, :func:`multifeat.data.guard.count_joint`) and raise
    :class:`~multifeat.data.guard.JointImageError` naming the phase, the set and the count when
    there is one. Returns the counts (None without ``joint_free``)."""
    feats = joint_free_features(cfg)
    if not feats:
        return None
    from multifeat.data.guard import JointImageError, count_joint, describe_joint

    counts = count_joint(data, feats)
    if counts["joint"]:
        raise JointImageError(
            f"{phase}: the config declares joint_free: [{', '.join(feats)}], but {phase}'s training data hold "
            f"{describe_joint(counts, feats)}. "
            f"Filter them out in {phase}.data (e.g. require: {{{feats[0]}: true, {feats[1]}: false}}), or remove "
            "joint_free from the config if jointly-featured training images are intended"
        )
    return counts


# ----------------------------------------------------------------------------------------- console and signals
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


def _console_from(log: Callable[[str], None] | Console | None) -> Console:
    if isinstance(log, Console):
        return log
    fn = log or print
    return Console(line=fn, detail=fn)


class PipelineInterrupted(BaseException):
    """SIGTERM/SIGINT outside a training fit (between phases, during the evaluation)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise PipelineInterrupted(signum)


def run_phase(cfg: dict[str, Any], layout: RunLayout, phase: str, log: Callable[[str], None] | Console | None = None) -> PhaseResult:
    """Run (or resume, or skip) one training phase."""
    from lightning.pytorch import Trainer, seed_everything

    from multifeat.utils.files import atomic_write_text, ensure_writable_dir

    con = _console_from(log)
    if layout.finished(phase):
        done = layout.read_done(phase)
        if done.get("config_hash") and done["config_hash"] != config_hash(cfg.get(phase) or {}):
            con.line(f"{phase}: its settings changed since it finished; keeping the finished results "
                     f"(delete {layout.phase(phase)} to run it again)")
        con.line(f"{phase}: finished earlier, skipped ({layout.final(phase)})")
        return PhaseResult(phase, "skipped", done.get("seconds", 0.0), str(layout.final(phase)),
                           done.get("samples"), done.get("metrics", {}), done.get("extra", {}))

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
    from multifeat.callbacks.interrupt import InterruptCheckpoint
    from multifeat.io.atomic_checkpoint_io import AtomicCheckpointIO

    trainer_kw.setdefault("plugins", [AtomicCheckpointIO()])
    callbacks.append(InterruptCheckpoint(dirpath=str(layout.checkpoints(phase)), filename=last.name, label=phase,
                                         resume_command=con.resume_command or "the same multifeat pipeline command",
                                         say=con.line))
    if not con.verbose:
        # Lightning's bar redraws with carriage returns: in the log file it would be noise
        if trainer_kw.get("enable_progress_bar", True) is not False:
            from multifeat.callbacks.progress import ConsoleProgress

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
        return PhaseResult(phase, "resumed" if resume else "ran", seconds, str(final))
    os.replace(tmp, final)
    metrics = _scalar_metrics(trainer)
    extra: dict[str, Any] = {}
    samples = layout.samples(phase) / "latest.png"
    if phase == "phase2":
        extra = d2_check(final, data, layout, con.detail)
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
        "joint_free": None if counts is None else {"features": joint_free_features(cfg), "images": counts["images"],
                                                   "joint": counts["joint"]},
    }
    atomic_write_text(layout.done(phase), json.dumps(done, indent=2) + "\n")
    trainer.strategy.barrier("multifeat-pipeline-phase-done")
    con.line(f"{phase}: finished in {seconds:.1f} s -> {final}")
    return PhaseResult(phase, "resumed" if resume else "ran", seconds, str(final), done["samples"], metrics, extra)


# ----------------------------------------------------------------------------------------- phase-2 check
#: Border colours of the D2 check: D2 says "has the feature" (p >= 0.5) / "does not".
YES_COLOUR, NO_COLOUR = (40, 170, 60), (210, 50, 40)


def save_verdict_grid(rows: list[tuple[str, Any, Any]], path: str | os.PathLike, upscale: int = 1, threshold: float = 0.5) -> Path:
    """One row per image source: its name, then each image framed in green (D2's probability >= ``threshold``)
    or red, with the probability written under it. ``rows``: (name, images [k,3,S,S] in [-1,1], probs [k])."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    from multifeat.utils.files import atomic_write_bytes
    from multifeat.utils.images import to_uint8

    font = ImageFont.load_default()
    size = int(rows[0][1].shape[-1]) * max(1, int(upscale))
    border, text_h, gap = 3, 12, 4
    label_w = max(8 + int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(name, font=font)) for name, _, _ in rows)
    cell_w, cell_h = size + 2 * border + gap, size + 2 * border + text_h + gap
    ncol = max(len(imgs) for _, imgs, _ in rows)
    canvas = Image.new("RGB", (label_w + ncol * cell_w + gap, len(rows) * cell_h + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (name, imgs, probs) in enumerate(rows):
        y = gap + r * cell_h
        draw.text((4, y + size // 2), name, fill=(0, 0, 0), font=font)
        arr = to_uint8(imgs).numpy()
        for k in range(len(imgs)):
            p = float(probs[k])
            x = label_w + k * cell_w
            draw.rectangle([x, y, x + size + 2 * border - 1, y + size + 2 * border - 1],
                           fill=YES_COLOUR if p >= threshold else NO_COLOUR)
            canvas.paste(Image.fromarray(arr[k]).resize((size, size), Image.NEAREST), (x + border, y + border))
            draw.text((x + border, y + size + 2 * border), f"{p:.2f}", fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def d2_check(d2_ckpt: Path, data: Any, layout: RunLayout, log: Callable[[str], None], per_row: int = 8) -> dict[str, Any]:
    """D2's mean probability per validation source and on G1's samples, and a grid of its verdicts.

    Grid rows (``phase2/samples/d2_check.png``): validation images of each source (positive,
    real_negative, bank, degraded) and G1 samples, ``per_row`` each, every image framed green when
    D2 says it has the feature (probability >= 0.5) and red otherwise, its probability under it.
    A good D2 is green on positives and on G1's samples, red on every negative source.
    """
    import torch

    from multifeat.data.common import SOURCE_NAMES
    from multifeat.io.checkpoints import load_phase_module

    d2 = load_phase_module(d2_ckpt, expect_phase="phase2")
    out: dict[str, Any] = {}
    rows: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    try:
        loader = data.val_dataloader()
    except Exception as e:  # noqa: BLE001 - the diagnostic is optional; say why it is missing
        log(f"phase2: no validation data for the D2 check ({e})")
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
                k = per_row - sum(len(t[0]) for t in have)
                if k > 0:
                    have.append((batch["image"][m][:k], p[m][:k]))
        for name in SOURCE_NAMES:
            if name in counts:
                out[f"d2/val_{name}_mean"] = round(sums[name] / counts[name], 4)
                rows.append((name, torch.cat([t[0] for t in firsts[name]]), torch.cat([t[1] for t in firsts[name]])))
        if layout.final("phase1").is_file():
            g1 = load_phase_module(layout.final("phase1"), expect_phase="phase1")
            g1_images = g1.sample(64, seed=0).float()
            g1_p = d2(g1_images).float().reshape(-1)
            out["d2/g1_samples_mean"] = round(float(g1_p.mean()), 4)
            rows.append(("g1_samples", g1_images[:per_row], g1_p[:per_row]))
    if rows:
        grid = layout.samples("phase2") / "d2_check.png"
        save_verdict_grid([(n, im.cpu(), pr.cpu()) for n, im, pr in rows], grid, upscale=2 if rows[0][1].shape[-1] <= 64 else 1)
        out["grid"] = str(grid)
        out["grid_rows"] = [n for n, _, _ in rows]
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


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def phase3_data_source(cfg: dict[str, Any]) -> dict[str, Any]:
    """``{"source", "root"}`` of the phase-3 data in the config (what G3 learns to draw)."""
    _, kw = split_spec((cfg.get("phase3") or {}).get("data"), DEFAULT_CLASSES["phase3"][1], "phase3.data")
    return {"source": str(kw.get("source", "synthetic")), "root": None if kw.get("root") is None else str(kw["root"])}


def check_eval_evaluator(cfg: dict[str, Any]) -> None:
    """Before any training: a given ``eval.args.evaluator`` must exist and have been trained on the data
    the pipeline generates (SyntheticFaces or CelebA); raises ConfigError/CheckpointError otherwise."""
    ev = dict(cfg.get("eval") or {})
    path = (ev.get("args") or {}).get("evaluator")
    if ev.get("enabled", True) is False or not path:
        return
    from multifeat.eval.evaluate import check_evaluator_matches, checkpoint_data_source

    check_evaluator_matches(checkpoint_data_source(path), phase3_data_source(cfg), str(path),
                            "the pipeline's phase-3 data (phase3.data)")


def eval_runs(cfg: dict[str, Any], layout: RunLayout) -> list[tuple[str, Path, list[str]]]:
    """(phase, output folder, ``multifeat evaluate`` arguments) of each evaluation: G3, then G1 (baseline)."""
    ev = dict(cfg.get("eval") or {})
    args = dict(ev.get("args") or {})
    for key in ("generator", "images", "out", "wandb-name", "wandb_name"):
        if key in args:
            raise ConfigError(f"eval.args.{key} is set by the pipeline; remove it")
    src = phase3_data_source(cfg)
    if "data" not in args:
        args["data"] = src["source"] if src["source"] in ("synthetic", "celeba") else "auto"
    if src["source"] == "celeba" and src["root"] and not any(k in args for k in ("celeba-root", "celeba_root")):
        args["celeba-root"] = src["root"]
    name = cfg.get("name", "method_a")
    wandb = str(cfg.get("logger", "wandb")).lower() == "wandb"
    if wandb:
        args.setdefault("logger", "wandb")
        args.setdefault("wandb-group", (cfg.get("wandb") or {}).get("group", name))
        args.setdefault("wandb-project", (cfg.get("wandb") or {}).get("project", "multifeat"))
    runs = [("phase3", layout.eval, f"{name}/eval")]
    if ev.get("baseline", True):
        runs.append(("phase1", layout.eval / "baseline_phase1", f"{name}/eval-baseline"))
    out = []
    for phase, folder, run_name in runs:
        extra = {"wandb-name": run_name} if wandb and args.get("logger") == "wandb" else {}
        out.append((phase, folder, ["--generator", str(layout.final(phase)), "--out", str(folder), *_eval_argv({**args, **extra})]))
    return out


def run_eval(cfg: dict[str, Any], layout: RunLayout, log: Callable[[str], None] | Console | None = None) -> PhaseResult | None:
    """Evaluate G3 (and G1 as the baseline) with ``multifeat evaluate``; grids of every phase into eval/grids.

    ``eval/done.json`` records the SHA-256 of every evaluated checkpoint: when one changed (a resumed
    phase 3 wrote a new G3), the evaluation runs again instead of reporting the old generator.
    """
    con = _console_from(log)
    ev = dict(cfg.get("eval") or {})
    if ev.get("enabled", True) is False:
        con.line("eval: disabled in the config")
        return None
    unknown = set(ev) - {"enabled", "baseline", "args", "grid_n"}
    if unknown:
        raise ConfigError(f"eval: unknown key(s) {sorted(unknown)}; expected enabled, baseline, args, grid_n")
    runs = eval_runs(cfg, layout)
    inputs = {phase: file_sha256(layout.final(phase)) for phase, _, _ in runs if layout.final(phase).is_file()}
    if layout.finished("eval"):
        done = layout.read_done("eval")
        if done.get("inputs") == inputs:
            con.line(f"eval: finished earlier, skipped ({layout.eval / 'report.md'})")
            return PhaseResult("eval", "skipped", done.get("seconds", 0.0), None, None, done.get("metrics", {}),
                               done.get("extra", {}))
        changed = [p for p in inputs if (done.get("inputs") or {}).get(p) != inputs[p]]
        con.line(f"eval: {', '.join(changed) or 'the evaluated'} checkpoint(s) changed since the last evaluation; evaluating again")
    try:
        from multifeat.commands import evaluate as evaluate_cmd
    except ImportError as e:
        con.line(f"eval: skipped, the evaluation command is not available in this build ({e})")
        return None
    from multifeat.utils.files import atomic_write_text, ensure_writable_dir

    con.line(f"eval: starting -> {layout.eval} (feature rates, joint rate, FID/KID of G3" +
             (" and of G1, the baseline)" if len(runs) > 1 else ")"))
    t0 = time.time()
    grids = write_phase_grids(layout, n=int(ev.get("grid_n", 64)))
    metrics: dict[str, Any] = {}
    for phase, out, argv in runs:
        ensure_writable_dir(out)
        con.detail(f"eval: multifeat evaluate {' '.join(argv)}")
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
                                                       "extra": extra, "inputs": inputs}, indent=2, default=str) + "\n")
    con.line(f"eval: finished in {seconds:.1f} s -> {layout.eval / 'report.md'}")
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
        "at the first unfinished phase and never overwrites finished ones. The console shows one line per "
        "phase start and end, a progress bar and the result; everything else goes to <run folder>/pipeline.log.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="YAML", help="pipeline config, e.g. experiments/method_a.yaml")
    p.add_argument("--run-dir", metavar="DIR", help="run folder (default runs/<name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (dotted key, YAML value); repeatable")
    p.add_argument("--stop-after", choices=(*PHASES, "eval"), help="stop after this step")
    p.add_argument("--verbose", action="store_true",
                   help="show Lightning's and W&B's messages, warnings and progress bars on the console too")
    p.add_argument("--progress-every", type=int, default=0, metavar="N",
                   help="when the output is not a terminal: a progress line every N batches (0: about 10 per phase)")
    return p


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run (the same arguments)."""
    import shlex

    return shlex.join(["multifeat", "pipeline", *argv])


def _eval_table(results: list[PhaseResult]) -> str | None:
    ev = next((r for r in results if r.name == "eval"), None)
    if ev is None:
        return None
    from multifeat.eval.evaluate import render_table

    rows = []
    for phase, label in (("phase3", "G3 (phase 3)"), ("phase1", "G1 (baseline)")):
        m = ev.metrics.get(phase)
        if isinstance(m, dict) and m.get("joint") and m.get("feature_rates") and m.get("diversity"):
            rows.append({**m, "label": label})
    try:
        return render_table(rows) if rows else None
    except (KeyError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    import signal

    from multifeat.loggers import QuietConsole

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.progress_every < 0:
        raise ConfigError(f"--progress-every must be 0 or more, got {args.progress_every}")
    cfg = load_config(args.config, args.overrides)
    check_eval_evaluator(cfg)
    from multifeat.utils.files import ensure_writable_dir

    root = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.get("name", "method_a")
    layout = RunLayout(ensure_writable_dir(root))
    rank0 = is_rank_zero()
    log_path = layout.root / "pipeline.log" if rank0 else Path(os.devnull)

    import threading

    # SIGTERM/SIGINT outside a fit end the run with a message and 143/130 (inside a fit the phase's
    # InterruptCheckpoint saves a checkpoint first); handlers can only be set from the main thread
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in previous:
            signal.signal(s, _raise_interrupted)
    step = "setup"
    try:
        with QuietConsole(log_path, verbose=args.verbose) as qc:
            def line(msg: str) -> None:
                if rank0:
                    qc.line(f"[pipeline] {msg}")

            con = Console(line=line, detail=lambda m: qc.write_log(f"[pipeline] {m}"), stream=qc.stream,
                          verbose=args.verbose, progress_every=args.progress_every, resume_command=resume_command(argv))
            qc.write_log(f"[pipeline] {time.strftime('%Y-%m-%d %H:%M:%S')} {resume_command(argv)}")
            t0 = time.time()
            results: list[PhaseResult] = []
            for phase in PHASES:
                step = phase
                results.append(run_phase(cfg, layout, phase, con))
                if args.stop_after == phase:
                    break
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                # the evaluation and the summary run in rank 0 alone, outside the training's process group
                dist.destroy_process_group()
            if not rank0:
                return 0
            if args.stop_after in (None, "eval"):
                step = "eval"
                r = run_eval(cfg, layout, con)
                if r is not None:
                    results.append(r)
            step = "summary"
            total = time.time() - t0
            md, js = write_summary(cfg, layout, results, total)
    except PipelineInterrupted as e:
        if rank0:
            print(f"[pipeline] {step} interrupted by {signal.Signals(e.signum).name}; finished phases are kept; "
                  f"resume with: {resume_command(argv)}", file=sys.stderr, flush=True)
        return 143 if e.signum == signal.SIGTERM else 130
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)

    out = sys.stdout
    print(file=out)
    print(f"Run folder: {layout.root}  ({total:.0f} s; full log: {log_path})", file=out)
    for r in results:
        where = r.samples or (", ".join((r.extra.get("grids") or {}).values()) if r.name == "eval" else None)
        print(f"  {r.name:<7} {r.status:<8} {r.seconds:7.1f} s  {r.checkpoint or r.extra.get('report') or ''}", file=out)
        if where:
            print(f"          grids: {where}", file=out)
    table = _eval_table(results)
    if table:
        print(file=out)
        print(table, file=out)
    print(f"Summary: {md} (+ {js.name})", file=out, flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from multifeat.cli import main as cli_main

    sys.exit(cli_main(["pipeline", *sys.argv[1:]]))
