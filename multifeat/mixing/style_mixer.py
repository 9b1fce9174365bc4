"""``StyleMixer``: Method B's style mixing around a StyleGAN2 generator.

The paper's recipe — project target images of feature 1 (e.g. bald faces) and of feature 2 (e.g.
bearded faces) into the generator's style space, regenerate them (sharp, features present), and mix
the two styles into one face that carries both — as one object::

    mixer = StyleMixer("network-snapshot.pkl")               # or a Generator, a .ckpt, a network file
    pa = mixer.project(bald_images, space="w+", num_steps=1000)  # ProjectionResult: ws, noise, errors
    pb = mixer.project(beard_images, space="w+")
    mixed = mixer.mix(pa, pb, preset="coarse")               # a's coarse layers, b's others
    best = mixer.guided_mix(pa, pb, bald_classifier, beard_classifier)   # search the split
    mixer.learn_directions({"bald": bald_classifier, "beard": beard_classifier})
    ws = mixer.edit(pa.ws, {"bald": +2.0, "beard": +1.5})

Why a plain ``nn.Module`` and not a training phase: nothing here trains network weights. Projection is
a per-image optimisation of latents against a frozen generator, mixing is a tensor operation, and the
guided search is an evaluation over candidate layer sets; none has epochs, a dataloader, checkpoints
to resume or a model to save. A ``LightningModule`` would add a trainer to drive loops it does not
need, so the ``multifeat mix`` command and notebooks call these methods directly (Lightning's
``seed_everything`` and explicit ``torch.Generator`` seeds still make runs repeatable).

The wrapped generator is a private copy (eval mode, no gradients); noise maps of projections are
swapped in only while drawing, so the caller's generator is never changed.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from multifeat.errors import ConfigError
from multifeat.mixing.directions import LatentDirection, edit_ws, learn_directions, orthogonalize
from multifeat.mixing.distance import build_distance
from multifeat.mixing.guided import GuidedMixResult, guided_search
from multifeat.mixing.layers import (
    LayerInfo,
    layer_mask,
    layer_table,
    mix_ws,
    noise_layer_indices,
    pair_indices,
    resolve_layers,
)
from multifeat.mixing.loading import as_probability_fn, load_stylegan2_generator
from multifeat.mixing.projection import ProjectionResult, estimate_w_stats, noise_layers, project, synthesize

__all__ = ["MixResult", "StyleMixer"]

NOISE_CHOICES = ("layers", "a", "b", "const")
Styles = Tensor | ProjectionResult


@dataclass
class MixResult:
    """Mixed styles and images.

    Attributes:
        ws: ``[M, num_ws, w_dim]``; images: ``[M, C, R, R]`` in [-1, 1].
        layers_from_a: the layers taken from ``a`` (the rest from ``b``).
        index_a / index_b: ``[M]`` which ``a`` and ``b`` style each mix was made from.
        noise: how the noise maps were chosen (``layers``, ``a``, ``b``, ``const``).
    """

    ws: Tensor
    images: Tensor
    layers_from_a: list[int]
    index_a: Tensor
    index_b: Tensor
    noise: str

    def to_dict(self) -> dict[str, Any]:
        return {"layers_from_a": self.layers_from_a, "index_a": self.index_a.tolist(), "index_b": self.index_b.tolist(),
                "noise": self.noise}


class StyleMixer(nn.Module):
    """Projection, style mixing, attribute-guided mixing and latent directions for a StyleGAN2 generator.

    Args:
        generator: a StyleGAN2 ``Generator`` (or any module with ``mapping``, ``synthesis``, ``num_ws``,
            ``w_dim``, ``z_dim``, ``img_resolution``, ``img_channels``), or a path for
            :func:`~multifeat.mixing.loading.load_stylegan2_generator`.
        distance: image distance for projection and penalties: ``lpips`` (default: LPIPS on VGG16, as
            the official projector; raises ``LPIPSWeightsMissingError`` naming the missing files when its
            weights are not on this machine), ``pixel`` (pixel + image-gradient, no weights),
            ``vgg16-features``, or a module ``(x, y) -> [N]`` (see :mod:`multifeat.mixing.distance`).
        vgg_weights / lpips_weights: explicit weight files for the LPIPS distance (default: the torch
            hub cache and the installed ``lpips`` package; never downloaded).
        device: where to run (default: the generator's device).
        batch_size: images drawn at a time when mixing (default 32).
    """

    def __init__(
        self,
        generator: nn.Module | str | os.PathLike,
        distance: str | nn.Module = "lpips",
        vgg_weights: str | os.PathLike | None = None,
        lpips_weights: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 32,
    ):
        super().__init__()
        if isinstance(generator, (str, os.PathLike)):
            generator = load_stylegan2_generator(generator)
        for attr in ("mapping", "synthesis", "num_ws", "w_dim", "z_dim", "img_resolution", "img_channels"):
            if not hasattr(generator, attr):
                raise ConfigError(f"the generator ({type(generator).__name__}) has no '{attr}'; a StyleGAN2 generator is needed")
        self.G = copy.deepcopy(generator).eval().requires_grad_(False)
        if device is not None:
            self.G.to(device)
        self.distance = build_distance(distance, vgg_weights, lpips_weights)
        self.distance.to(self.device)
        self.batch_size = int(batch_size)
        self.directions: dict[str, LatentDirection] = {}
        self._w_stats: dict[tuple[int, int], tuple[Tensor, float]] = {}

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    @property
    def num_ws(self) -> int:
        return int(self.G.num_ws)

    @property
    def w_dim(self) -> int:
        return int(self.G.w_dim)

    @property
    def resolution(self) -> int:
        return int(self.G.img_resolution)

    def train(self, mode: bool = True) -> StyleMixer:
        super().train(mode)
        self.G.eval()  # the generator is frozen
        return self

    def layer_table(self) -> list[LayerInfo]:
        """Modulated layers and the ws index each reads (see :mod:`multifeat.mixing.layers`)."""
        return layer_table(self.G.synthesis)

    def layers(self, preset: str | None = None, cutoff: int | None = None, layers: str | Sequence[int] | None = None) -> list[int]:
        """The layers taken from ``a`` for a preset, a cutoff or an explicit spec like ``"0-3,6"``."""
        return resolve_layers(self.num_ws, self.resolution, preset=preset, cutoff=cutoff, layers=layers)

    @torch.no_grad()
    def synthesize(self, ws: Tensor, noise: Mapping[str, Tensor] | None = None) -> Tensor:
        """Images ``[N, C, R, R]`` in [-1, 1] for ``ws [N, num_ws, w_dim]`` (noise maps ``[N, R, R]`` per
        layer, or the generator's own), drawn ``batch_size`` at a time."""
        ws = ws.to(self.device)
        out = []
        for s in range(0, ws.shape[0], self.batch_size):
            nz = None if noise is None else {k: v[s : s + self.batch_size].to(self.device) for k, v in noise.items()}
            out.append(synthesize(self.G, ws[s : s + self.batch_size], nz).clamp(-1, 1))
        return torch.cat(out) if out else ws.new_zeros(0, self.G.img_channels, self.resolution, self.resolution)

    def forward(self, ws: Tensor) -> Tensor:
        return self.synthesize(ws)

    def sample_ws(self, n: int, seed: int = 0, truncation_psi: float = 1.0, c: Tensor | None = None) -> Tensor:
        """``[n, num_ws, w_dim]`` styles of ``n`` random ``z`` (seeded)."""
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        z = torch.randn(n, self.G.z_dim, generator=gen).to(self.device)
        cc = None if not getattr(self.G, "c_dim", 0) else (c if c is not None else torch.zeros(self.G.c_dim)).to(self.device).reshape(1, -1).expand(n, -1)
        with torch.no_grad():
            return self.G.mapping(z, cc, truncation_psi=truncation_psi)

    # ------------------------------------------------------------------ projection
    def w_stats(self, num_samples: int = 10_000, seed: int = 0, c: Tensor | None = None) -> tuple[Tensor, float]:
        """``(w_avg, w_std)`` from ``num_samples`` mapped samples (cached per ``(num_samples, seed)``)."""
        key = (int(num_samples), int(seed))
        if c is not None:
            return estimate_w_stats(self.G, num_samples, seed, c)
        if key not in self._w_stats:
            self._w_stats[key] = estimate_w_stats(self.G, num_samples, seed)
        return self._w_stats[key]

    def project(
        self,
        targets: Tensor,
        space: str = "w",
        num_steps: int = 1000,
        seed: int = 0,
        progress: bool = True,
        w_avg_samples: int = 10_000,
        c: Tensor | None = None,
        **kwargs: Any,
    ) -> ProjectionResult:
        """Project ``targets [N, C, R, R]`` in [-1, 1] into ``w`` / ``w+`` (official projector schedule;
        other keyword arguments of :func:`multifeat.mixing.projection.project`, e.g.
        ``initial_learning_rate``, ``regularize_noise_weight``, ``optimize_noise``)."""
        stats = self.w_stats(w_avg_samples, seed, c)
        return project(self.G, targets.to(self.device), self.distance, space=space, num_steps=num_steps, seed=seed,
                       progress=progress, w_avg_samples=w_avg_samples, c=c, w_stats=stats, **kwargs)

    # ------------------------------------------------------------------ mixing
    def _styles(self, s: Styles) -> tuple[Tensor, dict[str, Tensor] | None]:
        if isinstance(s, ProjectionResult):
            return s.ws.to(self.device), s.noise
        if not isinstance(s, Tensor):
            raise ConfigError(f"styles must be a tensor [N, num_ws, w_dim] or a ProjectionResult, got {type(s).__name__}")
        if s.ndim == 2 and s.shape[1] == self.w_dim:
            s = s.unsqueeze(1).repeat(1, self.num_ws, 1)
        if s.ndim != 3 or s.shape[1:] != (self.num_ws, self.w_dim):
            raise ConfigError(f"styles must be [N, {self.num_ws}, {self.w_dim}] (or [N, {self.w_dim}]); got {tuple(s.shape)}")
        return s.to(self.device), None

    def _full_noise(self, noise: Mapping[str, Tensor] | None, n: int) -> dict[str, Tensor]:
        """Per-image maps for every noise layer; the generator's own maps where none are given."""
        out = {}
        for name, layer in noise_layers(self.G.synthesis).items():
            m = None if noise is None else noise.get(name)
            out[name] = m.to(self.device) if m is not None else layer.noise_const.to(self.device).expand(n, -1, -1)
        return out

    def _pair_noise(self, noise_a, noise_b, na: int, nb: int, noise: str):
        if noise not in NOISE_CHOICES:
            raise ConfigError(f"noise must be one of {NOISE_CHOICES}, got {noise!r}")
        if noise == "const" or (noise_a is None and noise_b is None) or not noise_layers(self.G.synthesis):
            return None, None
        return self._full_noise(noise_a, na), self._full_noise(noise_b, nb)

    @torch.no_grad()
    def mix(
        self,
        a: Styles,
        b: Styles,
        *,
        preset: str | None = None,
        cutoff: int | None = None,
        layers: str | Sequence[int] | None = None,
        pairing: str = "zip",
        noise: str = "layers",
    ) -> MixResult:
        """Mix styles ``a`` and ``b`` (tensors ``[N, num_ws, w_dim]`` or ``ProjectionResult``\\s): ``a``'s
        ``w`` on the layers of ``preset`` / ``cutoff`` (``0..K-1``) / ``layers``, ``b``'s elsewhere.

        ``pairing``: ``zip`` (a_i with b_i) or ``all`` (every combination). ``noise`` (when the styles
        carry projected noise maps): ``layers`` (each noise layer from the source of its ws index,
        default), ``a``, ``b``, or ``const`` (the generator's own maps).
        """
        from_a = self.layers(preset=preset, cutoff=cutoff, layers=layers)
        ws_a, noise_a = self._styles(a)
        ws_b, noise_b = self._styles(b)
        ia, ib = pair_indices(ws_a.shape[0], ws_b.shape[0], pairing)
        ia, ib = ia.to(self.device), ib.to(self.device)
        ws = mix_ws(ws_a[ia], ws_b[ib], from_a)
        full_a, full_b = self._pair_noise(noise_a, noise_b, ws_a.shape[0], ws_b.shape[0], noise)
        maps = None
        if full_a is not None:
            mask = layer_mask(from_a, self.num_ws)
            index = noise_layer_indices(self.G.synthesis)
            maps = {}
            for name in full_a:
                take_a = noise == "a" or (noise == "layers" and bool(mask[index[name]]))
                maps[name] = full_a[name][ia] if take_a else full_b[name][ib]
        images = self.synthesize(ws, maps)
        return MixResult(ws=ws, images=images, layers_from_a=from_a, index_a=ia.cpu(), index_b=ib.cpu(), noise=noise)

    def guided_mix(
        self,
        a: Styles,
        b: Styles,
        classifier_1: Callable[[Tensor], Tensor] | nn.Module,
        classifier_2: Callable[[Tensor], Tensor] | nn.Module,
        *,
        feature_1: str | None = None,
        feature_2: str | None = None,
        pairing: str = "zip",
        noise: str = "layers",
        **kwargs: Any,
    ) -> GuidedMixResult:
        """Choose, per pair, the layers from ``a`` that maximise the joint feature score of the mix.

        ``classifier_1`` judges feature 1 (expected from ``a``), ``classifier_2`` feature 2 (from ``b``):
        ``FeatureClassifier``\\s, ``AttributeEvaluator``\\s (with ``feature_1`` / ``feature_2`` naming the
        column) or callables ``images -> probabilities [N]``. Keyword arguments go to
        :func:`multifeat.mixing.guided.guided_search` (``search``, ``combine``, ``penalty_weight``,
        ``penalty_space``, ``refine_steps``, ``refine_lr``).
        """
        s1 = as_probability_fn(classifier_1, feature_1)
        s2 = as_probability_fn(classifier_2, feature_2)
        for fn in (s1, s2):
            if isinstance(fn, nn.Module):
                fn.to(self.device)
        ws_a, noise_a = self._styles(a)
        ws_b, noise_b = self._styles(b)
        ia, ib = pair_indices(ws_a.shape[0], ws_b.shape[0], pairing)
        ia, ib = ia.to(self.device), ib.to(self.device)
        full_a, full_b = self._pair_noise(noise_a, noise_b, ws_a.shape[0], ws_b.shape[0], noise)
        pa = None if full_a is None else {k: v[ia] for k, v in full_a.items()}
        pb = None if full_b is None else {k: v[ib] for k, v in full_b.items()}
        if noise == "a":
            pb = pa
        elif noise == "b":
            pa = pb
        kwargs.setdefault("batch_size", self.batch_size)
        result = guided_search(self.G, ws_a[ia], ws_b[ib], s1, s2, self.distance, noise_a=pa, noise_b=pb,
                               noise_layer_index=noise_layer_indices(self.G.synthesis), **kwargs)
        for row, i, j in zip(result.pairs, ia.tolist(), ib.tolist()):
            row["index_a"], row["index_b"] = i, j
        result.settings["noise"] = noise
        result.settings["pairing"] = pairing
        return result

    # ------------------------------------------------------------------ directions
    def learn_directions(
        self,
        classifiers: Mapping[str, Callable[[Tensor], Tensor] | nn.Module],
        num_samples: int = 2000,
        seed: int = 0,
        **kwargs: Any,
    ) -> dict[str, LatentDirection]:
        """Learn one W-space boundary per named classifier from ``num_samples`` labelled samples (see
        :mod:`multifeat.mixing.directions`); stored in ``self.directions`` and returned."""
        fns = {}
        for name, clf in classifiers.items():
            fn = as_probability_fn(clf, name if _is_evaluator(clf) else None)
            if isinstance(fn, nn.Module):
                fn.to(self.device)
            fns[name] = fn
        learned = learn_directions(self.G, fns, num_samples=num_samples, seed=seed, **kwargs)
        self.directions.update(learned)
        return learned

    def edit_vectors(self, names: Sequence[str] | None = None, mode: str = "conditional") -> dict[str, Tensor]:
        """Unit edit vectors of the learned directions ``names`` (default all), made independent by
        :func:`~multifeat.mixing.directions.orthogonalize` (``conditional``, ``gram_schmidt``, ``none``)."""
        names = list(self.directions) if names is None else list(names)
        missing = [n for n in names if n not in self.directions]
        if missing:
            raise ConfigError(f"no learned direction {missing[0]!r}; learned: {', '.join(self.directions) or 'none'} "
                              "(call learn_directions first)")
        return orthogonalize({n: self.directions[n].normal for n in names}, mode=mode)

    def edit(
        self,
        w: Styles,
        amounts: Mapping[str, float],
        mode: str = "conditional",
        layers: str | Sequence[int] | None = None,
    ) -> Tensor:
        """Move styles along learned directions: ``edit(ws, {"bald": +2.0, "beard": +1.5})``.

        The vectors of all learned directions are orthogonalised together (``mode``), so an edit of one
        attribute leaves the others' scores unchanged (``conditional``). ``layers`` restricts the edit
        (e.g. ``"0-7"``); ``w`` may be ``[N, w_dim]``, ``[N, num_ws, w_dim]`` or a ``ProjectionResult``.
        """
        ws = w.ws if isinstance(w, ProjectionResult) else w
        vectors = self.edit_vectors(mode=mode)
        idx = None if layers is None else resolve_layers(self.num_ws, self.resolution, layers=layers)
        return edit_ws(ws.to(self.device), amounts, {k: v.to(self.device) for k, v in vectors.items()}, idx)


def _is_evaluator(obj: Any) -> bool:
    from multifeat.eval.evaluator import AttributeEvaluator

    return isinstance(obj, AttributeEvaluator)
