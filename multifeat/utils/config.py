"""``--set dotted.key=value`` overrides shared by the package's commands (pipeline, bench)."""

from __future__ import annotations

from typing import Any

from multifeat.errors import ConfigError


def set_dotted(cfg: dict[str, Any], item: str, *, create: bool, example: str, what: str = "config") -> None:
    """Apply one ``dotted.key=value`` override to ``cfg`` in place; the value is parsed as YAML.

    ``create=True`` makes missing sections and keys; ``create=False`` accepts only keys that exist
    (a typo then names the valid keys instead of being ignored). ``example`` is shown when the item
    is not of the form KEY=VALUE; ``what`` names the config in messages.
    """
    import yaml

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
