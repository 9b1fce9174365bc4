"""Feature extractors for FID, KID and diversity, and how one is chosen.

Two extractors, both ``nn.Module`` s that take images ``[N, 3, S, S]`` in [-1, 1] and return float64
features ``[N, D]`` (and carry ``num_features = D``, which torchmetrics reads):

- :class:`InceptionFeatures`: torch-fidelity's InceptionV3 (2048-d pool features, the network behind
  published FID numbers). Used only when the ``torch_fidelity`` package is importable AND its weight
  file is already on disk; nothing is ever downloaded.
- :class:`EvaluatorFeatures`: the attribute evaluator's own embedding (``ConvClassifier.features``,
  the global-average-pooled last conv stage). Always available. Numbers made with it are comparable
  only between runs that use the same evaluator checkpoint, never with published FIDs.

:func:`select_extractor` applies that rule and returns the extractor with a name that every report
prints. :func:`torchmetrics_fid_kid` runs torchmetrics' FID and KID with an extractor on images.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from multifeat.errors import ConfigError

#: File name of torch-fidelity's InceptionV3 weights (as stored in torch's hub checkpoint folder).
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


def torch_fidelity_available() -> bool:
    try:
        import torch_fidelity  # noqa: F401
    except Exception:
        return False
    return True


def default_inception_weights() -> Path:
    """Where torch-fidelity would keep its weights: ``<torch hub dir>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def find_inception_weights(path: str | os.PathLike | None = None) -> Path | None:
    """A local InceptionV3 weight file: ``path`` if given (must exist), else the default location if present."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"InceptionV3 weights '{p}' not found; give an existing {INCEPTION_WEIGHTS_FILE} file")
        return p
    p = default_inception_weights()
    return p if p.is_file() else None


class EvaluatorFeatures(nn.Module):
    """The attribute evaluator's embedding as a torchmetrics-compatible extractor.

    Args:
        evaluator: an :class:`~multifeat.phases.attribute_evaluator.AttributeEvaluator` (or anything with
            ``features(x) -> [N, D]``, ``image_size`` and ``feature_dim``).
    Input images are resized (bilinear, antialiased) to the evaluator's image size when they differ.
    """

    def __init__(self, evaluator: nn.Module) -> None:
        super().__init__()
        self.evaluator = evaluator
        self.num_features = int(evaluator.feature_dim)
        self.image_size = int(evaluator.image_size)

    def train(self, mode: bool = True) -> EvaluatorFeatures:  # always frozen in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_to(images.float(), self.image_size)
        device = next(self.evaluator.parameters()).device
        return self.evaluator.features(x.to(device)).double().cpu()


class InceptionFeatures(nn.Module):
    """torch-fidelity's InceptionV3 pool features (2048-d), from a local weight file only.

    Takes [-1, 1] float images, converts them to uint8 as the network expects (it resizes to 299 itself).
    """

    def __init__(self, weights_path: str | os.PathLike) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights_path))
        self.num_features = 2048

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
        device = next(self.net.parameters()).device
        return self.net(x.to(device)).reshape(x.shape[0], -1).double().cpu()


def resize_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` to ``size x size`` (bilinear, antialiased); unchanged if already that size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def select_extractor(
    kind: str = "auto",
    evaluator: nn.Module | None = None,
    inception_weights: str | os.PathLike | None = None,
) -> tuple[nn.Module, str]:
    """Choose the FID/KID feature extractor: ``(module, name)``.

    ``kind``: ``auto`` (InceptionV3 if torch-fidelity and its weights are local, else the evaluator),
    ``inception`` (error if unavailable) or ``evaluator``. The name says which one was used, e.g.
    ``"inception-v3 (torch-fidelity, 2048-d)"`` or ``"evaluator (ConvClassifier features, 128-d)"``.
    """
    kind = (kind or "auto").lower()
    if kind not in {"auto", "inception", "evaluator"}:
        raise ConfigError(f"unknown feature extractor '{kind}': expected auto, inception or evaluator")
    if kind in {"auto", "inception"}:
        weights = find_inception_weights(inception_weights)
        available = torch_fidelity_available()
        if weights is not None and available:
            return InceptionFeatures(weights), "inception-v3 (torch-fidelity, 2048-d)"
        if kind == "inception":
            why = "the torch-fidelity package is not installed" if not available else (
                f"no weight file at {default_inception_weights()} (give --inception-weights PATH)"
            )
            raise ConfigError(f"InceptionV3 features are unavailable: {why}; use --extractor evaluator or auto")
    if evaluator is None:
        raise ConfigError("the evaluator feature extractor needs an evaluator")
    ext = EvaluatorFeatures(evaluator)
    return ext, f"evaluator (ConvClassifier features, {ext.num_features}-d)"


@torch.no_grad()
def extract_features(extractor: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Run ``extractor`` over ``images [N, 3, S, S]`` in batches: float64 ``[N, D]`` on the CPU."""
    out = [extractor(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    if not out:
        return torch.zeros(0, int(getattr(extractor, "num_features", 0)), dtype=torch.float64)
    return torch.cat(out).double()


@torch.no_grad()
def torchmetrics_fid_kid(
    real_images: torch.Tensor,
    fake_images: torch.Tensor,
    extractor: nn.Module,
    batch_size: int = 64,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """torchmetrics' FID and KID with ``extractor`` plugged in as their ``feature`` network.

    Returns ``{"fid", "kid_mean", "kid_std"}``. KID subsets hold ``min(kid_subset_size, Nreal, Nfake)``
    samples; ``seed`` fixes their draw.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    size = int(min(kid_subset_size, real_images.shape[0], fake_images.shape[0]))
    fid = FrechetInceptionDistance(feature=extractor, normalize=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=extractor, subsets=kid_subsets, subset_size=size)
    for images, real in ((real_images, True), (fake_images, False)):
        for i in range(0, images.shape[0], batch_size):
            batch = images[i : i + batch_size]
            fid.update(batch, real=real)
            kid.update(batch, real=real)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


__all__ = [
    "INCEPTION_WEIGHTS_FILE",
    "EvaluatorFeatures",
    "InceptionFeatures",
    "default_inception_weights",
    "extract_features",
    "find_inception_weights",
    "resize_to",
    "select_extractor",
    "torch_fidelity_available",
    "torchmetrics_fid_kid",
]
