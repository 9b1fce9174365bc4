"""Network files: a plain state dict plus a JSON config (class name + constructor arguments).

``save_network(G, "g.pt")`` writes, atomically, a ``torch.save`` file holding only plain data::

    {"format": "multifeat.network", "version": 1,
     "config": '{"class_name": "multifeat.nets.stylegan2.Generator", "init_kwargs": {...}}',
     "state_dict": {name: tensor}}

``load_network("g.pt")`` reads it weights-only (no code can run), looks the class up in
:data:`NETWORK_CLASSES` (never imports a name from the file), builds it from the JSON arguments and
loads the state dict strictly; the network comes back in eval mode.

A network class can be saved if it is registered (:func:`register_network`) and exposes its
constructor arguments as a JSON-serialisable ``init_kwargs`` dict.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from multifeat.errors import CheckpointError, ConfigError
from multifeat.nets.stylegan2.networks import Discriminator, Generator
from multifeat.utils.files import atomic_torch_save

__all__ = [
    "FORMAT",
    "NETWORK_CLASSES",
    "load_network",
    "load_state_dict_checked",
    "read_network_config",
    "register_network",
    "save_network",
]

FORMAT = "multifeat.network"
VERSION = 1

#: Class name stored in the file -> class. Only these can be rebuilt.
NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    "multifeat.nets.stylegan2.Generator": Generator,
    "multifeat.nets.stylegan2.Discriminator": Discriminator,
}


def register_network(name: str, cls: type[nn.Module]) -> None:
    """Allow ``cls`` (whose instances have ``init_kwargs``) to be saved and loaded under ``name``."""
    known = NETWORK_CLASSES.get(name)
    if known is not None and known is not cls:
        raise ConfigError(f"network name '{name}' is already registered for {known.__qualname__}")
    NETWORK_CLASSES[name] = cls


def _class_name(module: nn.Module) -> str:
    for name, cls in NETWORK_CLASSES.items():
        if type(module) is cls:
            return name
    raise ConfigError(
        f"cannot save a {type(module).__qualname__}: not a registered network class "
        f"({', '.join(NETWORK_CLASSES)}); see multifeat.io.network_files.register_network"
    )


def save_network(module: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``module``'s class name, constructor arguments and state dict to ``path`` atomically."""
    name = _class_name(module)
    init_kwargs = getattr(module, "init_kwargs", None)
    if not isinstance(init_kwargs, dict):
        raise ConfigError(f"cannot save a {type(module).__qualname__}: it has no init_kwargs dict")
    try:
        config = json.dumps({"class_name": name, "init_kwargs": init_kwargs}, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot save a {name}: its init_kwargs are not JSON-serialisable ({e})") from e
    state_dict = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "config": config, "state_dict": state_dict}
    return atomic_torch_save(payload, path)


def read_network_config(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Return ``(config, state_dict)`` of a network file (weights-only read, checked)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"network file '{p}' does not exist")
    if p.is_dir():
        raise CheckpointError(f"network file path '{p}' is a folder; expected a file written by save_network")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e).strip()
        msg = (text.splitlines()[0] if text else type(e).__name__)[:200]
        raise CheckpointError(f"cannot read network file '{p}': corrupt or not a PyTorch file ({msg})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{p}' is not a multifeat network file (expected format '{FORMAT}')")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"'{p}' has network-file version {payload.get('version')!r}; expected {VERSION}")
    try:
        config = json.loads(payload["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"'{p}': the network config is missing or not valid JSON") from e
    state_dict = payload.get("state_dict")
    if not isinstance(config, dict) or not isinstance(state_dict, dict):
        raise CheckpointError(f"'{p}': expected a config object and a state dict")
    return config, state_dict


def load_state_dict_checked(module: nn.Module, state_dict: dict, where: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with a ``CheckpointError`` that lists the
    missing and unexpected keys and the shape mismatches (at most 10 of each)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: stored {tuple(state_dict[k].shape)}, expected {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and (not isinstance(state_dict[k], torch.Tensor) or state_dict[k].shape != v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
            problems.append(f"{label}: {', '.join(items[:10])}{more}")
    if problems:
        raise CheckpointError(f"{where}: the state dict does not match {type(module).__name__}; {'; '.join(problems)}")
    module.load_state_dict(state_dict, strict=True)


def build_checked(cls: type[nn.Module], kwargs: object, state_dict: dict, where: str, what: str) -> nn.Module:
    """``cls(**kwargs)`` with ``state_dict`` loaded by :func:`load_state_dict_checked`; a
    :class:`CheckpointError` naming ``where`` and ``what`` (the kwargs' key) when the kwargs are not a
    mapping or the class refuses them."""
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{where}: {what} must be a mapping of constructor arguments, got {type(kwargs).__name__}")
    try:
        module = cls(**kwargs)
    except (TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{where}: cannot build a {cls.__name__} from {what} {kwargs!r} ({first})") from e
    load_state_dict_checked(module, state_dict, where)
    return module


def load_network(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network saved by :func:`save_network` (eval mode, on ``device``)."""
    config, state_dict = read_network_config(path)
    name = config.get("class_name")
    cls = NETWORK_CLASSES.get(name)
    if cls is None:
        raise CheckpointError(
            f"'{path}' holds a network of class {name!r}; known classes: {', '.join(NETWORK_CLASSES)}"
        )
    module = build_checked(cls, config.get("init_kwargs"), state_dict, f"'{path}'", "init_kwargs")
    return module.to(device).eval()
