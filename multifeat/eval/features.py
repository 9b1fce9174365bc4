"""Feature extractors for FID, KID and diversity, and how one is chosen.

Two extractors, both ``nn.Module`` s that take images ``[N, 3, S, S]`` in [-1, 1] and return float64
features ``[N, D]`` (and carry ``num_features = D``, which torchmetrics reads):

- :class:`InceptionFeatures`: torch-fidelity's InceptionV3 (2048-d pool features of the FID Inception
  network, the one behind published FID numbers), run through torchmetrics' ``NoTrainInceptionV3``.
  It needs the optional ``torch-fidelity`` package (``pip install torch-fidelity``) and the weight
  file ``weights-inception-2015-12-05-6726825d.pth``, looked for (1) at an explicit path
  (``inception_weights=``, ``--inception-weights``) and (2) in torch's hub cache
  ``<torch.hub.get_dir()>/checkpoints/``, where torch-fidelity itself stores it. Only when
  ``allow_download=True`` (off by default) and the file is in neither place does torch-fidelity's
  own code download it (into the hub cache) on a machine with internet.
- :class:`EvaluatorFeatures`: the attribute evaluator's own embedding (``ConvClassifier.features``,
  the global-average-pooled last conv stage). Always available. Numbers made with it are comparable
  only between runs that use the same evaluator checkpoint, never with published FIDs.

:func:`select_extractor` applies that rule and returns the extractor with a name that every report
prints. When InceptionV3 is wanted (``auto``) but unavailable it says so once per process (an
:class:`InceptionUnavailableWarning` naming the file, where it was looked for and what is missing)
and falls back to the evaluator's features. :func:`check_inception_weights` checks a weight file
against the network's 566 tensors before anything is built from it, so a wrong file fails with a
message naming it. :func:`torchmetrics_fid_kid` runs torchmetrics' FID and KID with an extractor.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from multifeat.errors import CheckpointError, ConfigError

#: File name of torch-fidelity's InceptionV3 weights (as stored in torch's hub checkpoint folder).
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
#: Where torch-fidelity downloads that file from (used only with ``allow_download=True``).
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"
#: Number of tensors in the file: 94 conv + batch-norm units x 5 parameters/statistics + the
#: batch counter each, and the 1008-way ``fc`` (weight 1008x2048, bias).
INCEPTION_NUM_TENSORS = 566
#: What to install for InceptionV3 features.
FIDELITY_INSTALL_HINT = "pip install torch-fidelity (or pip install 'torchmetrics[image]')"
INCEPTION_NAME = "inception-v3 (torch-fidelity, 2048-d)"


class InceptionUnavailableWarning(UserWarning):
    """InceptionV3 features were asked for (``auto``) but cannot be used; the evaluator's are used instead."""


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message in _WARNED:
        return
    _WARNED.add(message)
    warnings.warn(message, InceptionUnavailableWarning, stacklevel=3)


def torch_fidelity_available() -> bool:
    try:
        import torch_fidelity  # noqa: F401
    except Exception:
        return False
    return True


def default_inception_weights() -> Path:
    """Where torch-fidelity keeps its weights: ``<torch hub dir>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def find_inception_weights(path: str | os.PathLike | None = None) -> Path | None:
    """A local InceptionV3 weight file: ``path`` if given (must exist), else the hub-cache file if present."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"InceptionV3 weights '{p}' not found; give an existing {INCEPTION_WEIGHTS_FILE} file")
        return p
    p = default_inception_weights()
    return p if p.is_file() else None


@functools.lru_cache(maxsize=1)
def inception_weight_shapes() -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the FID InceptionV3 weight file (566 entries).

    torch-fidelity's network uses torchvision's layer names and shapes (it only changes pooling in
    the forward pass), so they are read off torchvision's ``Inception3`` with a 1008-way head and no
    auxiliary classifier, built on the meta device (no memory, no weights).
    """
    from torchvision.models.inception import Inception3

    with torch.device("meta"):
        net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _listing(names, limit: int = 4) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_inception_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load ``path`` (legacy or zip serialisation, tensors only) and check it is the FID InceptionV3
    state dict: the 566 expected names with their shapes (``fc.weight`` 1008x2048, ...).

    Returns the state dict. Raises :class:`CheckpointError` naming the file and what differs.
    """
    p = Path(path)
    expected = f"torch-fidelity's InceptionV3 weights ({INCEPTION_WEIGHTS_FILE}: {INCEPTION_NUM_TENSORS} tensors, fc.weight 1008x2048)"
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"InceptionV3 weights '{p}' not found; expected {expected}") from e
    except Exception as e:  # not a torch file, truncated, or holding more than tensors
        raise CheckpointError(f"InceptionV3 weights '{p}' cannot be read as a tensor file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}); expected {expected}") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"InceptionV3 weights '{p}' hold a {type(state).__name__}, not a state dict of tensors; expected {expected}")
    shapes = inception_weight_shapes()
    missing, unexpected = set(shapes) - set(state), set(state) - set(shapes)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_listing(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
    wrong = {k: (tuple(state[k].shape), shapes[k]) for k in set(shapes) & set(state) if tuple(state[k].shape) != shapes[k]}
    if wrong:
        shown = [f"{k} {list(a)} instead of {list(b)}" for k, (a, b) in sorted(wrong.items())[:3]]
        problems.append(f"{len(wrong)} of the wrong shape ({'; '.join(shown)}{' ...' if len(wrong) > 3 else ''})")
    if problems:
        raise CheckpointError(f"InceptionV3 weights '{p}' do not match the network: {len(state)} tensors, "
                              f"{', '.join(problems)}; expected {expected}")
    return state


class EvaluatorFeatures(nn.Module):
    """The attribute evaluator's embedding as a torchmetrics-compatible extractor.

    Args:
        evaluator: an :class:`~multifeat.eval.evaluator.AttributeEvaluator` (or anything with
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
    """torch-fidelity's InceptionV3 pool features (2048-d) through torchmetrics' ``NoTrainInceptionV3``.

    Args:
        weights_path: the weight file; it is checked with :func:`check_inception_weights` first.
            None: the hub-cache file, downloaded by torch-fidelity when ``allow_download`` and absent.
        allow_download: let torch-fidelity download the file when ``weights_path`` is None and the
            hub cache lacks it (needs internet). Off by default.

    Takes [-1, 1] float images and converts them to uint8 as the network expects. The network resizes
    to 299 x 299 with torch-fidelity's TensorFlow-compatible bilinear resize (``antialias=False``), as
    in the reference FID implementation. Raises :class:`ConfigError` naming ``torch-fidelity`` when
    the package is missing.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, allow_download: bool = False) -> None:
        super().__init__()
        path = find_inception_weights(weights_path)
        if path is not None:
            check_inception_weights(path)
        elif not allow_download:
            raise ConfigError(
                f"InceptionV3 weights {INCEPTION_WEIGHTS_FILE} not found at {default_inception_weights()}; give their path "
                f"(--inception-weights PATH) or allow the download ({INCEPTION_WEIGHTS_URL})"
            )
        if not torch_fidelity_available():
            raise ConfigError(f"InceptionV3 features need the torch-fidelity package, which is not installed: {FIDELITY_INSTALL_HINT}")
        from torchmetrics.image.fid import NoTrainInceptionV3

        try:
            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                          feature_extractor_weights_path=None if path is None else str(path), antialias=False)
        except (OSError, RuntimeError) as e:  # a failed download (no internet) or an unloadable file
            where = str(path) if path is not None else INCEPTION_WEIGHTS_URL
            raise ConfigError(f"InceptionV3 weights from {where} could not be loaded: {str(e).splitlines()[0][:300]}") from e
        self.weights_path = path if path is not None else default_inception_weights()
        self.num_features = 2048

    def train(self, mode: bool = True) -> InceptionFeatures:  # always frozen in eval mode
        return super().train(False)

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


def inception_unavailable_reason(inception_weights: str | os.PathLike | None = None, allow_download: bool = False) -> str | None:
    """Why InceptionV3 features cannot be used here (None: they can). Checks presence only, no loading."""
    path = find_inception_weights(inception_weights)
    lacks = []
    if path is None and not allow_download:
        lacks.append(f"no weight file {INCEPTION_WEIGHTS_FILE} in the torch hub cache {default_inception_weights().parent} "
                     "and none given (--inception-weights PATH); downloading is off")
    if not torch_fidelity_available():
        lacks.append(f"the torch-fidelity package is not installed ({FIDELITY_INSTALL_HINT})")
    return "; ".join(lacks) or None


def select_extractor(
    kind: str = "auto",
    evaluator: nn.Module | None = None,
    inception_weights: str | os.PathLike | None = None,
    allow_download: bool = False,
) -> tuple[nn.Module, str]:
    """Choose the FID/KID feature extractor: ``(module, name)``.

    ``kind``: ``auto`` (InceptionV3 when torch-fidelity and its weights are available, else the
    evaluator, with one :class:`InceptionUnavailableWarning` per process saying why), ``inception``
    (a :class:`ConfigError` saying what is missing when unavailable) or ``evaluator``.
    ``inception_weights``: explicit weight file; ``allow_download``: let torch-fidelity fetch the
    weights when no local file exists (off by default). A weight file that is present but wrong is
    always an error (:class:`CheckpointError` naming it), never a silent fallback.
    The name says which extractor was used, e.g. ``"inception-v3 (torch-fidelity, 2048-d)"`` or
    ``"evaluator (ConvClassifier features, 128-d)"``.
    """
    kind = (kind or "auto").lower()
    if kind not in {"auto", "inception", "evaluator"}:
        raise ConfigError(f"unknown feature extractor '{kind}': expected auto, inception or evaluator")
    if kind in {"auto", "inception"}:
        why = inception_unavailable_reason(inception_weights, allow_download)
        if why is None:
            return InceptionFeatures(inception_weights, allow_download=allow_download), INCEPTION_NAME
        if kind == "inception":
            raise ConfigError(f"InceptionV3 features are unavailable: {why}; use --extractor evaluator or auto")
        _warn_once(f"InceptionV3 features for FID/KID are unavailable: {why}. FID and KID use the evaluator's "
                   "features instead (named in every report; not comparable with published FIDs).")
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
    "INCEPTION_NAME",
    "INCEPTION_NUM_TENSORS",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "InceptionUnavailableWarning",
    "check_inception_weights",
    "inception_unavailable_reason",
    "inception_weight_shapes",
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
