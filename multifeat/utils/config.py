"""Config files of the package's commands (pipeline, bench): reading a YAML mapping, ``--set`` overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from multifeat.errors import ConfigError


def read_yaml_mapping(path: str | os.PathLike, what: str, expected: str) -> dict[str, Any]:
    """The YAML mapping in ``path``; a :class:`ConfigError` naming the file (as ``what``) when it is
    missing, not YAML, or not a mapping (``expected`` says what the mapping should hold)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} '{p}' does not exist")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} '{p}' is not valid YAML: {e}") from e
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} '{p}' must be a mapping {expected}, got {type(loaded).__name__}")
    return loaded


def set_dotted(cfg: dict[str, Any], item: str, *, create: bool, example: str, what: str = "config") -> None:
    """Apply one ``dotted.key=value`` override to ``cfg`` in place; the value is parsed as YAML.

    ``create=True`` makes missing sections and keys; ``create=False`` accepts only keys that exist
    (a typo then names the valid keys instead of being ignored). ``example`` is shown when the item
    is not of the form KEY=VALUE; ``what`` names the config in messages.
    """
    key, sep, raw = str(item).partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. {example}), got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({e})") from e
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None and create:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a section of the {what}")
        node = nxt
    if not create and parts[-1] not in node:
        raise ConfigError(f"--set {key}: unknown key '{parts[-1]}'; expected one of {', '.join(map(str, node))}")
    node[parts[-1]] = value


def drop_at_values(cfg: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` without each dotted key of ``values`` that holds exactly that value (or is absent).

    For hashes of protocols that gained keys after runs were published: a key added later, at the
    value that does what the protocol did before the key existed, leaves the hash unchanged, so the
    earlier records still match. ``cfg`` is changed in place and returned."""
    for dotted, before in values.items():
        *parents, leaf = dotted.split(".")
        node: Any = cfg
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf, before) == before:
            node.pop(leaf, None)
    return cfg
