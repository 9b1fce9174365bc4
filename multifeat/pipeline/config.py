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
import functools
import importlib
import inspect
import os
import re
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError, ArgumentParser
from lightning.pytorch import LightningDataModule, LightningModule

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
    check_sections(cfg, str(Path(path)))
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


def route_init_args(cfg: dict[str, Any], key: str) -> str:
    """``key`` with ``init_args`` inserted after every section it passes that is in ``class_path`` form
    and whose next part is neither ``class_path`` nor ``init_args``: ``phase3.model.alpha`` reaches
    ``phase3.model.init_args.alpha`` when ``phase3.model`` names a class (as jsonargparse's
    ``--model.alpha`` shorthand does), and stays as it is for a bare mapping."""
    parts = key.split(".")
    out: list[str] = []
    node: Any = cfg
    for i, part in enumerate(parts):
        out.append(part)
        node = node.get(part) if isinstance(node, dict) else None
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        if nxt is not None and isinstance(node, dict) and "class_path" in node and nxt not in ("class_path", "init_args"):
            out.append("init_args")
            node = node.get("init_args")
    return ".".join(out)


def apply_override(cfg: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override in place (value parsed as YAML; missing sections are made;
    a key inside a ``class_path`` section goes to its ``init_args``, see :func:`route_init_args`)."""
    key, sep, value = str(item).partition("=")
    if sep and key.strip():
        item = f"{route_init_args(cfg, key.strip())}={value}"
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


@functools.lru_cache(maxsize=64)
def _class_parser(cls: type) -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, fail_untyped=False)
    return parser


def _signature_keys(cls: type) -> list[str] | None:
    """The keyword arguments of ``cls.__init__``; None when it takes ``**kwargs`` (jsonargparse then follows
    them to where they go, e.g. the parent class)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return [k for k, p in params.items() if k != "self" and p.kind is not p.VAR_POSITIONAL]


def parse_init_args(cls: type, kwargs: dict[str, Any], what: str) -> dict[str, Any]:
    """``kwargs`` parsed and type-checked against ``cls.__init__`` by jsonargparse, as LightningCLI parses
    ``init_args`` (types from the annotations: ``lr: "abc"`` for a float is refused, ``[1, 1, 0.1]`` for a
    ``Sequence[float]`` accepted). Returns the parsed values of the given keys only (the class keeps its
    own defaults). A :class:`ConfigError` names the key, the class and what it expects."""
    if not kwargs:
        return {}
    known = _signature_keys(cls)
    unknown = [k for k in kwargs if known is not None and k not in known]
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {unknown} for {cls.__module__}.{cls.__name__}; "
                          f"its arguments are: {', '.join(known)}")
    try:
        parsed = _class_parser(cls).parse_object(kwargs, defaults=False).as_dict()
    except ArgumentError as e:
        msg = " ".join(str(e).split())
        key = re.search(r'Parser key "([^"]+)": ', msg)
        where = f"{what}.{key.group(1)}" if key else what
        if key:
            msg = msg[key.end():]
        raise ConfigError(f"{where}: not accepted by {cls.__module__}.{cls.__name__}: {msg}") from e
    return {k: parsed.get(k, v) for k, v in kwargs.items()}


def check_class(cls: Any, class_path: str, base: type | None, what: str) -> None:
    """``cls`` must be a class (and a subclass of ``base`` when given)."""
    if not isinstance(cls, type):
        raise ConfigError(f"{what}: class_path '{class_path}' is not a class")
    if base is not None and not issubclass(cls, base):
        raise ConfigError(f"{what}: class_path '{class_path}' is not a {base.__name__} (expected a subclass of "
                          f"{base.__module__}.{base.__name__})")


def instantiate(class_path: str, kwargs: dict[str, Any], what: str, base: type | None = None):
    """``class_path(**kwargs)`` after :func:`parse_init_args`; ``base``: the class it must derive from."""
    cls = import_class(class_path, what)
    check_class(cls, class_path, base, what)
    kwargs = parse_init_args(cls, kwargs, f"{what}.init_args")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{what}: {class_path} does not accept these arguments ({e})") from e


def section_bases() -> dict[str, type]:
    """The base class of each section: ``model`` a LightningModule, ``data`` a LightningDataModule."""
    return {"model": LightningModule, "data": LightningDataModule}


def check_sections(cfg: dict[str, Any], where: str = "config") -> None:
    """Type-check every phase's ``model`` and ``data`` (class and ``init_args``) before anything runs."""
    for phase in PHASES:
        sec = cfg.get(phase) or {}
        for part, base in section_bases().items():
            what = f"{where}: {phase}.{part}"
            class_path, kwargs = split_spec(sec.get(part), DEFAULT_CLASSES[phase][0 if part == "model" else 1], what)
            cls = import_class(class_path, what)
            check_class(cls, class_path, base, what)
            parse_init_args(cls, kwargs, f"{what}.init_args")


def _plain(value: Any) -> Any:
    """``value`` as plain YAML data: tuples as lists, paths and other objects as text."""
    if isinstance(value, dict):
        return {(k if isinstance(k, (str, int, float, bool)) else str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


#: what the pipeline sets at run time (``--print_config`` shows them as the class defaults)
SET_BY_PIPELINE = ("phase2.data.bank_dir", "phase3.model.g1_ckpt", "phase3.model.d2_ckpt",
                   "phase1.callbacks.negative_bank.bank_dir", "<phase>.callbacks.sample_grid.dirpath")


def resolved_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with every phase's ``model`` and ``data`` in ``class_path``/``init_args`` form and every
    ``init_args`` complete: the given values parsed, the class defaults for the rest (``--print_config``)."""
    out = copy.deepcopy(cfg)
    for phase in PHASES:
        sec = out.setdefault(phase, {}) or {}
        out[phase] = sec
        for part in ("model", "data"):
            what = f"{phase}.{part}"
            class_path, kwargs = split_spec(sec.get(part), DEFAULT_CLASSES[phase][0 if part == "model" else 1], what)
            cls = import_class(class_path, what)
            given = parse_init_args(cls, kwargs, f"{what}.init_args")
            try:
                full = _class_parser(cls).parse_object(given).as_dict()
            except ArgumentError:  # a required argument the pipeline sets (g1_ckpt, ...): the given values alone
                full = {**_class_parser(cls).get_defaults().as_dict(), **given}
            sec[part] = {"class_path": class_path, "init_args": _plain(full)}
    return _plain(out)


def joint_free_features(cfg: dict[str, Any]) -> list[str]:
    """The features no training image may carry together (``joint_free``; empty when not declared)."""
    return [str(f) for f in (cfg.get("joint_free") or [])]


__all__ = ["DEFAULT_CLASSES", "PHASE_CALLBACKS", "PHASE_KEYS", "TOP_KEYS", "apply_data_root", "apply_override",
           "check_sections", "import_class", "inject", "instantiate", "joint_free_features", "load_config",
           "parse_init_args", "resolved_config", "route_init_args", "split_spec", "validate_config"]
