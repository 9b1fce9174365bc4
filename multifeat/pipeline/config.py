"""The Method-A pipeline config: reading the YAML, ``--set`` overrides, validation, and turning a
phase's ``model:`` / ``data:`` section into objects.

Layout of the file (see ``experiments/method_a.yaml`` and ``docs/pipeline.md``)::

    name: method_a          # run name: default folder runs/<name>, the W&B group
    seed: 0                 # seed_everything(seed) before each phase
    logger: wandb           # wandb (offline without an account) | csv | none
    wandb: {project: multifeat}
    joint_free: [bald, beard]  # optional: no training set of any phase may hold an image with all of them
    data_root: null         # optional: fills every phase's data root
    trainer: {...}          # Trainer arguments shared by every phase
    phase1: {model: {...}, data: {...}, trainer: {...}, callbacks: {negative_bank: {...}, sample_grid: {...}}}
    phase2: {model: {...}, data: {...}, trainer: {...}}
    phase3: {model: {...}, data: {...}, trainer: {...}, callbacks: {sample_grid: {...}}}
    eval: {enabled: true, baseline: true, args: {features: "bald,beard", n: 256}}
"""

from __future__ import annotations

import copy
import importlib
import os
from pathlib import Path
from typing import Any

from multifeat.errors import ConfigError
from multifeat.pipeline.layout import PHASES
from multifeat.utils.config import read_yaml_mapping, set_dotted

TOP_KEYS = ("name", "seed", "logger", "wandb", "joint_free", "data_root", "trainer", *PHASES, "eval")
PHASE_KEYS = ("model", "data", "trainer", "callbacks")
DEFAULT_CLASSES = {
    "phase1": ("multifeat.phases.phase1.Phase1GAN", "multifeat.data.datamodule.AttributeDataModule"),
    "phase2": ("multifeat.phases.feature_classifier.FeatureClassifier", "multifeat.data.classifier_data.FeatureClassifierDataModule"),
    "phase3": ("multifeat.phases.phase3.Phase3GAN", "multifeat.data.switching.SwitchingDataModule"),
}
PHASE_CALLBACKS = {"phase1": ("negative_bank", "sample_grid"), "phase2": (), "phase3": ("sample_grid",)}


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


def import_class(path: str, what: str):
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


def inject(kwargs: dict[str, Any], key: str, value: Any, what: str) -> None:
    if key in kwargs and kwargs[key] not in (None, value):
        raise ConfigError(f"{what}.{key} is set by the pipeline (to {value!r}); remove it from the config (it says {kwargs[key]!r})")
    kwargs[key] = value


def instantiate(class_path: str, kwargs: dict[str, Any], what: str):
    cls = import_class(class_path, what)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{what}: {class_path} does not accept these arguments ({e})") from e


def joint_free_features(cfg: dict[str, Any]) -> list[str]:
    """The features no training image may carry together (``joint_free``; empty when not declared)."""
    return [str(f) for f in (cfg.get("joint_free") or [])]


__all__ = ["DEFAULT_CLASSES", "PHASE_CALLBACKS", "PHASE_KEYS", "TOP_KEYS", "apply_data_root", "apply_override",
           "import_class", "inject", "instantiate", "joint_free_features", "load_config", "split_spec", "validate_config"]
