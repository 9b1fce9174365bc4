"""Loading what style mixing needs: a StyleGAN2 generator from any file the package knows, and
feature classifiers as plain ``images -> probabilities [N]`` functions.

Generator files (:func:`load_stylegan2_generator` tells them apart by content, not by name):

* an official StyleGAN2-ADA network pickle (``network-snapshot-*.pkl``; not a zip archive): read with
  :func:`multifeat.io.official_pickle.load_official_pickle` (nothing in it is executed); ``G_ema`` is
  used (``G`` if the file has no ``G_ema``);
* a ``StyleGAN2ADA`` Lightning checkpoint written by this package (``checkpoint["multifeat"]["phase"] ==
  "stylegan2ada"``): its ``G_ema``;
* a network file of :func:`multifeat.io.network_files.save_network` holding a StyleGAN2 ``Generator``;
* a plain dict with ``G_init_kwargs`` and ``G_state_dict`` (e.g. the reference fixtures).

Classifiers (:func:`load_probability_fn`): a ``FeatureClassifier`` (phase 2) checkpoint or an
``AttributeEvaluator`` checkpoint (then a feature name picks the column).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multifeat.errors import CheckpointError, ConfigError
from multifeat.io.network_files import FORMAT, build_checked, load_network
from multifeat.nets.stylegan2 import Generator

__all__ = ["ProbabilityFn", "as_probability_fn", "load_probability_fn", "load_stylegan2_generator"]

ProbabilityFn = Callable[[Tensor], Tensor]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _check_generator(g: Any, path: Path, what: str) -> Generator:
    if not isinstance(g, Generator):
        raise CheckpointError(f"'{path}' {what} is a {type(g).__name__}, not a StyleGAN2 Generator")
    return g.eval().requires_grad_(False)


def load_stylegan2_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """A StyleGAN2 :class:`~multifeat.nets.stylegan2.Generator` (eval mode, no gradients) from ``path``.

    Accepts an official network pickle, a ``StyleGAN2ADA`` checkpoint, a ``save_network`` file or a
    ``{"G_init_kwargs", "G_state_dict"}`` dict (see the module docstring). Raises ``CheckpointError``
    naming the file and what was found when it holds none of these.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"generator file '{p}' does not exist")
    if p.is_dir():
        raise CheckpointError(f"generator path '{p}' is a folder; expected a .pkl, .ckpt or .pt file")
    if not zipfile.is_zipfile(p):
        # Official pickles are plain pickle streams; torch.save files are zip archives.
        from multifeat.io.official_pickle import load_official_pickle

        nets = load_official_pickle(p)
        key = "G_ema" if nets.get("G_ema") is not None else "G"
        if nets.get(key) is None:
            raise CheckpointError(f"network pickle '{p}' holds no generator (G_ema or G)")
        return _check_generator(nets[key], p, f"entry '{key}'").to(device)

    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read '{p}': not a readable PyTorch file ({_first_line(e)})") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"'{p}' holds a {type(payload).__name__}; expected a generator checkpoint or network file")

    if payload.get("format") == FORMAT:
        return _check_generator(load_network(p), p, "network").to(device)
    meta = payload.get("multifeat")
    if isinstance(meta, dict):
        phase = meta.get("phase")
        if phase != "stylegan2ada":
            raise CheckpointError(
                f"'{p}' is a {phase or 'multifeat'} checkpoint; style mixing needs a StyleGAN2 generator "
                "(a stylegan2ada checkpoint, an official network pickle or a network file)"
            )
        from multifeat.io.checkpoints import load_phase_module

        module = load_phase_module(p, expect_phase="stylegan2ada")
        g = getattr(module, "G_ema", None)
        if g is None:
            raise CheckpointError(f"'{p}': the StyleGAN2ADA module has no G_ema")
        return _check_generator(g, p, "G_ema").to(device)
    if "G_init_kwargs" in payload and "G_state_dict" in payload:
        g = build_checked(Generator, payload["G_init_kwargs"], payload["G_state_dict"], f"'{p}'", "G_init_kwargs")
        return g.eval().requires_grad_(False).to(device)
    keys = sorted(str(k) for k in payload)[:8]
    raise CheckpointError(
        f"'{p}' is a PyTorch file but not a StyleGAN2 generator: expected a stylegan2ada checkpoint, a network file "
        f"(format '{FORMAT}') or G_init_kwargs + G_state_dict; found keys {keys}"
    )


class _ResizedProbability(nn.Module):
    """``images -> probabilities [N]`` around a module, resizing images to its input size first."""

    def __init__(self, module: nn.Module, image_size: int | None, column: int | None, name: str, logits: bool):
        super().__init__()
        self.module = module.eval()
        self.image_size = image_size
        self.column = column
        self.name = name
        self.logits = logits

    def forward(self, x: Tensor) -> Tensor:
        if self.image_size and x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
        dev = next(self.module.parameters(), torch.empty(0)).device
        out = self.module(x.to(dev))
        if self.logits:
            out = torch.sigmoid(out)
        if self.column is not None:
            out = out[:, self.column]
        return out.reshape(x.shape[0]).to(x.device)


def as_probability_fn(obj: Any, feature: str | None = None) -> ProbabilityFn:
    """Turn a classifier into a differentiable ``images [N,3,H,W] in [-1,1] -> probabilities [N]``.

    * ``FeatureClassifier``: its ``forward`` (sigmoid probabilities), images resized to its size;
    * ``AttributeEvaluator``: sigmoid of the ``feature`` column (``feature`` required);
    * any other callable: used as it is (it must return ``[N]`` values in [0, 1]).
    The networks are put in eval mode.
    """
    from multifeat.eval.evaluator import AttributeEvaluator
    from multifeat.phases.feature_classifier import FeatureClassifier

    if isinstance(obj, FeatureClassifier):
        if feature is not None and feature != obj.hparams.feature:
            raise ConfigError(f"this feature classifier judges '{obj.hparams.feature}', not '{feature}'")
        return _ResizedProbability(obj, int(obj.hparams.image_size), None, str(obj.hparams.feature), logits=False)
    if isinstance(obj, AttributeEvaluator):
        names = list(obj.attributes)
        if feature is None:
            raise ConfigError(f"an attribute evaluator judges several attributes ({', '.join(names)}); name the feature")
        if feature not in names:
            raise ConfigError(f"the attribute evaluator has no attribute '{feature}'; it has {', '.join(names)}")
        return _ResizedProbability(obj, int(obj.image_size), names.index(feature), feature, logits=True)
    if callable(obj):
        return obj
    raise ConfigError(f"a classifier must be callable (images -> probabilities [N]); got {type(obj).__name__}")


def load_probability_fn(path: str | os.PathLike, feature: str | None = None, device: str | torch.device = "cpu") -> ProbabilityFn:
    """Load a ``FeatureClassifier`` or ``AttributeEvaluator`` checkpoint as a probability function."""
    from multifeat.io.checkpoints import load_phase_module

    module = load_phase_module(path, expect_phase=("phase2", "evaluator"))
    fn = as_probability_fn(module.to(device), feature)
    return fn
