"""Reading checkpoints safely and with clear errors.

Every LightningModule of the package stores ``checkpoint["multifeat"]`` (see
:class:`multifeat.phases.base.PhaseModule`): the class path, the phase name and the image size, so
a checkpoint can be identified and loaded without knowing which phase wrote it.

Checkpoints are read with ``torch.load(..., weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch

from multifeat.errors import CheckpointError


def load_checkpoint(path: str | os.PathLike, expect_phase: str | tuple[str, ...] | None = None, map_location: Any = "cpu") -> dict:
    """Load a checkpoint dict weights-only; check its phase when ``expect_phase`` is given."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint '{p}' does not exist")
    if p.is_dir():
        raise CheckpointError(f"checkpoint path '{p}' is a folder; expected a .ckpt file")
    if not os.access(p, os.R_OK):
        raise CheckpointError(f"checkpoint '{p}' is not readable (permission denied)")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupt, not a torch file, or unsafe globals
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint '{p}': not a valid PyTorch checkpoint or corrupt ({msg[:200]})") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint '{p}' holds a {type(ckpt).__name__}, expected a Lightning checkpoint dict")
    if expect_phase is not None:
        wanted = (expect_phase,) if isinstance(expect_phase, str) else tuple(expect_phase)
        phase = checkpoint_phase(ckpt)
        if phase not in wanted:
            raise CheckpointError(
                f"checkpoint '{p}' was written by {phase or 'something other than multifeat'}; "
                f"expected a {' or '.join(wanted)} checkpoint"
            )
    return ckpt


def checkpoint_phase(ckpt: dict) -> str | None:
    meta = ckpt.get("multifeat")
    return meta.get("phase") if isinstance(meta, dict) else None


def checkpoint_meta(ckpt: dict) -> dict:
    meta = ckpt.get("multifeat")
    return dict(meta) if isinstance(meta, dict) else {}


#: Classes that moved to another module: the path older checkpoints record -> where the class lives now.
MOVED_CLASSES: dict[str, str] = {
    "multifeat.phases.attribute_evaluator.AttributeEvaluator": "multifeat.eval.evaluator.AttributeEvaluator",
}


def _import_class(class_path: str):
    class_path = MOVED_CLASSES.get(class_path, class_path)
    module_name, _, name = class_path.rpartition(".")
    if not module_name.startswith("multifeat."):
        raise CheckpointError(f"checkpoint names class '{class_path}', which is not part of multifeat")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise CheckpointError(f"checkpoint names class '{class_path}', which this version of multifeat lacks") from e


def load_phase_module(path: str | os.PathLike, expect_phase: str | tuple[str, ...] | None = None, map_location: Any = "cpu", **overrides: Any):
    """Rebuild the LightningModule that wrote a package checkpoint, in eval mode.

    ``overrides`` replace stored hyper-parameters (as in ``load_from_checkpoint``).
    """
    ckpt = load_checkpoint(path, expect_phase=expect_phase, map_location=map_location)
    meta = checkpoint_meta(ckpt)
    if "class_path" not in meta:
        raise CheckpointError(f"checkpoint '{path}' has no multifeat metadata; it was not written by a multifeat phase")
    cls = _import_class(meta["class_path"])
    try:
        module = cls.load_from_checkpoint(str(path), map_location=map_location, weights_only=True, **overrides)
    except CheckpointError:
        raise
    except RuntimeError as e:  # state dict does not match the rebuilt architecture
        raise CheckpointError(f"checkpoint '{path}' does not match {cls.__name__}'s architecture: {str(e).splitlines()[0][:300]}") from e
    return module.eval()
