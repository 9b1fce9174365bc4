"""The protocol of the MultiFeat-Synth benchmark: loading, validation, presets and the protocol hash.

The values live in YAML files shipped inside the package, the single source of the defaults:

- ``multifeat/bench/protocols/synth.yaml``: the default protocol; every key a config may set;
- ``multifeat/bench/protocols/presets/{quick,smoke}.yaml``: the ``--quick`` / ``--smoke`` overrides.

:func:`load_config` merges, in order: the default protocol, a ``--config`` file (a path, or the name
of a packaged protocol such as ``synth``; unknown keys are refused), a preset, then ``KEY=VALUE``
overrides; the result is parsed and type-checked by jsonargparse against the typed sections of
:mod:`multifeat.bench.schema` (types only: the values stay in the YAML files). :func:`protocol_hash` fingerprints everything that changes the numbers; run records carry
it, so a folder never mixes runs of different protocols. See ``docs/benchmark.md``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from multifeat.bench.methods import resolve_methods
from multifeat.bench.schema import parse_protocol
from multifeat.errors import ConfigError
from multifeat.phases.phase3 import check_d2_views
from multifeat.utils.config import drop_at_values, read_yaml_mapping, set_dotted

#: the folder of the packaged protocol files
PROTOCOLS_DIR = Path(__file__).resolve().with_name("protocols")
#: the protocol every config starts from (``protocols/synth.yaml``)
DEFAULT_PROTOCOL = "synth"
#: the presets (``protocols/presets/<name>.yaml``)
PRESETS = ("quick", "smoke")

#: keys that change how or where a run executes, not what it measures (left out of the protocol hash)
_RUNTIME_KEYS = ("seeds", "methods", "threads", "accelerator", "precision")
#: keys added to the protocol after runs were published, with the value that does what the protocol did
#: before the key existed: at that value a key is left out of the hash, so earlier records still match
LATER_KEYS: dict[str, Any] = {"gan.upsample": "transpose", "method_a.phase3.d2_views": 0, "method_a.phase3.d2_view_p": 0.8}


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A benchmark config file as a mapping; a missing, unreadable or non-mapping file is a ConfigError."""
    return copy.deepcopy(_read_yaml_cached(str(path)))


@functools.lru_cache(maxsize=16)
def _read_yaml_cached(path: str) -> dict[str, Any]:
    return read_yaml_mapping(path, "benchmark config", "of protocol keys")


def protocol_names() -> list[str]:
    """Names of the packaged protocols (``--config NAME``)."""
    return sorted(p.stem for p in PROTOCOLS_DIR.glob("*.yaml"))


def resolve_config_path(path: str | os.PathLike) -> Path:
    """An existing file as given, else the packaged protocol of that name; neither -> ConfigError."""
    p = Path(path)
    if p.is_file():
        return p
    if str(path) in protocol_names():
        return PROTOCOLS_DIR / f"{path}.yaml"
    raise ConfigError(f"benchmark config '{path}' is neither a file nor a packaged protocol "
                      f"(expected a YAML path or one of: {', '.join(protocol_names())})")


def default_config() -> dict[str, Any]:
    """The default protocol (``protocols/synth.yaml``), a fresh copy."""
    return read_yaml(PROTOCOLS_DIR / f"{DEFAULT_PROTOCOL}.yaml")


def preset_config(name: str) -> dict[str, Any]:
    """The overrides of a preset (``quick``/``smoke``); an unknown name is a ConfigError."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; expected one of {', '.join(PRESETS)}")
    return read_yaml(PROTOCOLS_DIR / "presets" / f"{name}.yaml")


def deep_merge(base: dict[str, Any], update: dict[str, Any], where: str = "config", strict: bool = True) -> dict[str, Any]:
    """``base`` with ``update`` merged in (nested dicts merged, other values replaced). With ``strict``,
    a key that ``base`` lacks is a :class:`ConfigError` naming it (``where`` says in which file)."""
    out = copy.deepcopy(base)
    for k, v in (update or {}).items():
        if strict and k not in out:
            raise ConfigError(f"{where}: unknown key '{k}'; expected one of {', '.join(map(str, out))}")
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "add_blocks":
            out[k] = deep_merge(out[k], v, f"{where}.{k}" if where else k, strict)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | os.PathLike | None = None, preset: str | None = None,
                overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The protocol: the packaged default (``protocols/synth.yaml``), then ``path`` (a YAML file, or the
    name of a packaged protocol), then a preset (``quick``/``smoke``), then ``KEY=VALUE`` overrides
    (dotted key, YAML value). Validated."""
    cfg = default_config()
    if path is not None:
        p = resolve_config_path(path)
        cfg = deep_merge(cfg, read_yaml(p), str(p))
    if preset is not None:
        cfg = deep_merge(cfg, preset_config(preset), f"preset {preset}")
    for item in overrides:
        apply_override(cfg, item)
    return validate_config(parse_protocol(cfg, " + ".join(config_sources(path, preset))))


def config_sources(path: str | os.PathLike | None = None, preset: str | None = None) -> list[str]:
    """The files :func:`load_config` merges, in order (for ``--print-config``)."""
    out = [str(PROTOCOLS_DIR / f"{DEFAULT_PROTOCOL}.yaml")]
    if path is not None:
        out.append(str(resolve_config_path(path)))
    if preset is not None:
        preset_config(preset)
        out.append(str(PROTOCOLS_DIR / "presets" / f"{preset}.yaml"))
    return out


def apply_override(cfg: dict[str, Any], item: str) -> None:
    """``dotted.key=value`` (value parsed as YAML) into ``cfg``; the key must exist."""
    set_dotted(cfg, item, create=False, example="gan.steps=100", what="benchmark config")


def int_list(value: Any, name: str) -> list[int]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    try:
        out = [int(v) for v in value]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} must be a list of integers, got {value!r}") from e
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"{name} must be non-empty and without repeats, got {value!r}")
    return out


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check the values that would otherwise fail late (or silently): returns ``cfg``."""
    feats = [str(f) for f in cfg["features"]]
    if len(feats) != 2 or feats[0] == feats[1]:
        raise ConfigError(f"features must be two different names (feature 1, feature 2), got {cfg['features']!r}")
    cfg["features"] = feats
    size = cfg["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 8 or size & (size - 1):
        raise ConfigError(f"image_size must be a power of two >= 8, got {size!r}")
    cfg["seeds"] = int_list(cfg["seeds"], "seeds")
    resolve_methods(cfg["methods"])
    d = cfg["data"]
    if d["source"] not in ("synthetic", "celeba"):
        raise ConfigError(f"data.source must be synthetic or celeba, got {d['source']!r}")
    if d["source"] == "celeba" and not d.get("root"):
        raise ConfigError("data.source: celeba needs data.root (the folder holding celeba/); e.g. --set data.root=/data")
    if d["source"] == "synthetic":
        if d["joint_fraction"] not in (0, 0.0):
            raise ConfigError(f"data.joint_fraction must be 0.0 in this benchmark (no joint training images), got {d['joint_fraction']!r}")
        reserved = {int(cfg["evaluator"]["seed"]), int(cfg["eval"]["real_seed"])}
        bad = [s for s in cfg["seeds"] if s < 0 or s >= min(reserved)]
        if bad:
            raise ConfigError(f"seeds {bad} are not allowed: training seeds must be in [0, {min(reserved)}) so that training "
                              f"images never coincide with the evaluator's (seed {cfg['evaluator']['seed']}) or the real "
                              f"reference images (seed {cfg['eval']['real_seed']})")
    if cfg["method_b"]["styles"] not in ("sampled", "projected"):
        raise ConfigError(f"method_b.styles must be sampled or projected, got {cfg['method_b']['styles']!r}")
    p3 = cfg["method_a"]["phase3"]
    check_d2_views(p3["d2_views"], p3["d2_view_p"], "method_a.phase3.")  # early: Phase 3 would only refuse after phases 1-2
    if not 0 <= int(p3["snapshot_epoch"]) < int(p3["epochs"]):
        raise ConfigError(f"method_a.phase3.snapshot_epoch must be in [0, epochs={p3['epochs']}), got {p3['snapshot_epoch']}")
    if int(cfg["eval"]["n"]) < 2 or int(cfg["eval"]["n_real"]) < 2:
        raise ConfigError("eval.n and eval.n_real must be >= 2 (FID needs two samples)")
    return cfg


def protocol_hash(cfg: dict[str, Any]) -> str:
    """Hash of everything that changes the numbers (not seeds/methods/threads/accelerator/cache folder)."""
    c = {k: v for k, v in cfg.items() if k not in _RUNTIME_KEYS}
    c = copy.deepcopy(c)
    c["evaluator"].pop("cache_dir", None)
    c["data"].pop("num_workers", None)
    drop_at_values(c, LATER_KEYS)
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


__all__ = ["DEFAULT_PROTOCOL", "PRESETS", "PROTOCOLS_DIR", "apply_override", "config_sources", "deep_merge",
           "default_config", "int_list", "load_config", "preset_config", "protocol_hash", "protocol_names",
           "read_yaml", "resolve_config_path", "validate_config"]
