"""Method B as the paper describes it: project held-out target images — one showing feature 1 (e.g. a
bald face) and one showing feature 2 (a bearded face), never one showing both — into the generator's
style space, mix each pair with the guided layer search, and judge the mixes.

:func:`mix_projected_targets` runs the whole chain on tensors and returns a
:class:`ProjectedTargetMix`: the two projections with their reconstruction quality (PSNR always;
LPIPS only when its weight files are on this machine, and said so when they are not), the guided
search's choice per pair, a per-layer table of what each style layer carries (:func:`layer_effects`),
and — with a judge — the judged rates of the targets, projections and mixes, the joint rate of the
mixes with its Wilson interval. :func:`synthetic_targets` renders held-out SyntheticFaces targets
(:func:`synthetic_target_set`: their dataset, with labels). The benchmark's method e
(:mod:`multifeat.bench.method_b`) and ``multifeat mix --held-out-synthetic`` both run this chain.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from multifeat.errors import ConfigError
from multifeat.eval.metrics import wilson_interval
from multifeat.mixing.distance import LPIPSWeightsMissingError, build_distance
from multifeat.mixing.guided import GuidedMixResult
from multifeat.mixing.layers import band_resolution
from multifeat.mixing.projection import ProjectionResult
from multifeat.mixing.style_mixer import StyleMixer

ProbabilityFn = Callable[[Tensor], Tensor]

#: default seed of held-out SyntheticFaces targets: training sets use seeds below 10000, the evaluator
#: 10000, the benchmark's real joint images 20000.
HELD_OUT_TARGET_SEED = 30000


def psnr(images: Tensor, targets: Tensor) -> Tensor:
    """Per-image PSNR in dB of images in [-1, 1]: ``10 log10(4 / mse)`` (= the PSNR on a [0, 1] scale)."""
    mse = (images.float().clamp(-1, 1) - targets.float().to(images.device)).square().flatten(1).mean(dim=1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def synthetic_target_set(feature: str, other: str, n: int, image_size: int, seed: int = HELD_OUT_TARGET_SEED):
    """The SyntheticFaces dataset of :func:`synthetic_targets` (``n`` faces with ``feature`` and without
    ``other``, seed ``seed``): its labels are what a caller checks, e.g. with the no-joint-images guard."""
    from multifeat.data import SyntheticFaces

    if n < 1:
        raise ConfigError(f"the number of targets must be >= 1, got {n}")
    return SyntheticFaces(num_samples=int(n), image_size=int(image_size), seed=int(seed), require={feature: True, other: False})


def synthetic_targets(feature: str, other: str, n: int, image_size: int, seed: int = HELD_OUT_TARGET_SEED) -> Tensor:
    """``n`` SyntheticFaces ``[n, 3, S, S]`` in [-1, 1] that show ``feature`` and not ``other`` (seed ``seed``)."""
    ds = synthetic_target_set(feature, other, n, image_size, seed)
    return torch.stack([it["image"] for it in ds.__getitems__(list(range(len(ds))))])


def write_synthetic_targets(folder: str | os.PathLike, feature: str, other: str, n: int, image_size: int,
                            seed: int = HELD_OUT_TARGET_SEED) -> list[Path]:
    """Render :func:`synthetic_targets` into ``folder`` as ``000.png``, ``001.png``, ... (atomic writes)."""
    from multifeat.utils.images import save_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [save_image(img, folder / f"{i:03d}.png") for i, img in enumerate(synthetic_targets(feature, other, n, image_size, seed))]


def reconstruction_lpips(mixer: StyleMixer, vgg_weights: str | os.PathLike | None = None,
                         lpips_weights: str | os.PathLike | None = None) -> tuple[nn.Module | None, str | None]:
    """The LPIPS distance for judging reconstructions, or ``(None, why)`` when its weight files are missing.

    The projection's own distance is reused when it is LPIPS. A missing file is never replaced by another
    distance: the caller reports PSNR only and prints ``why``.
    """
    if getattr(mixer.distance, "name", None) == "lpips-vgg":
        return mixer.distance, None
    try:
        return build_distance("lpips", vgg_weights, lpips_weights).to(mixer.device), None
    except LPIPSWeightsMissingError as e:
        # the message's last advice (another projection distance) does not apply to judging reconstructions
        return None, " ".join(str(e).split()).split(" Or choose the weight-free")[0]


@torch.no_grad()
def _probs(fn: ProbabilityFn, images: Tensor, batch_size: int = 256) -> Tensor:
    return torch.cat([fn(x).flatten().float().cpu() for x in images.split(batch_size)])


@torch.no_grad()
def layer_effects(mixer: StyleMixer, a: ProjectionResult, b: ProjectionResult, score_1: ProbabilityFn,
                  score_2: ProbabilityFn) -> list[dict[str, Any]]:
    """What each style layer carries, measured by single-layer swaps over the pairs ``(a_i, b_i)``.

    For ws index ``k``: ``gain_1`` = mean P(feature 1) of ``b`` with only layer ``k`` taken from ``a``,
    minus that of ``b``'s projection; ``gain_2`` = mean P(feature 2) of ``a`` with only layer ``k`` from
    ``b``, minus that of ``a``'s projection. A layer carries feature 1 when ``gain_1`` is large.
    """
    rows = []
    p1_b = _probs(score_1, b.images).mean()
    p2_a = _probs(score_2, a.images).mean()
    for k in range(mixer.num_ws):
        only_a = mixer.mix(a, b, layers=[k], pairing="zip").images
        all_but = [i for i in range(mixer.num_ws) if i != k]
        only_b = mixer.mix(a, b, layers=all_but, pairing="zip").images
        q1, q2 = _probs(score_1, only_a).mean(), _probs(score_2, only_b).mean()
        rows.append({"layer": k, "resolution": band_resolution(k),
                     "p1_with_layer_from_a": round(float(q1), 4), "gain_1": round(float(q1 - p1_b), 4),
                     "p2_with_layer_from_b": round(float(q2), 4), "gain_2": round(float(q2 - p2_a), 4)})
    return rows


@dataclass
class ProjectedTargetMix:
    """Result of :func:`mix_projected_targets` (``a`` = feature-1 targets, ``b`` = feature-2 targets)."""

    targets_a: Tensor
    targets_b: Tensor
    proj_a: ProjectionResult
    proj_b: ProjectionResult
    guided: GuidedMixResult
    reconstruction: dict[str, Any]
    layers: list[dict[str, Any]]
    judged: dict[str, Any] | None
    features: tuple[str, str]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> Tensor:
        """The mixes ``[P, 3, R, R]`` in [-1, 1]."""
        return self.guided.images

    def grid_rows(self) -> Tensor:
        """Per pair: feature-1 target, its projection, feature-2 target, its projection, the mix
        (``[5 P, 3, R, R]``, row by row)."""
        cols = [self.targets_a.cpu(), self.proj_a.images.cpu(), self.targets_b.cpu(), self.proj_b.images.cpu(),
                self.guided.images.detach().cpu()]
        return torch.stack(cols, dim=1).flatten(0, 1).float().clamp(-1, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "settings": self.settings, "reconstruction": self.reconstruction,
                "guided": self.guided.to_dict(), "layers": self.layers, "judged": self.judged}


def _rate(present: Tensor) -> dict[str, Any]:
    k, n = int(present.sum()), int(present.numel())
    lo, hi = wilson_interval(k, n)
    return {"rate": k / n if n else float("nan"), "count": k, "n": n, "ci95": [lo, hi]}


def judge_images(judge_1: ProbabilityFn, judge_2: ProbabilityFn, images: Tensor, threshold: float = 0.5) -> dict[str, Any]:
    """Rates of feature 1, feature 2 and both at once (probability >= ``threshold``), with Wilson intervals."""
    p1, p2 = _probs(judge_1, images), _probs(judge_2, images)
    f1, f2 = p1 >= threshold, p2 >= threshold
    return {"feature_1": _rate(f1), "feature_2": _rate(f2), "joint": _rate(f1 & f2),
            "p1": [round(float(x), 4) for x in p1], "p2": [round(float(x), 4) for x in p2]}


def mix_projected_targets(
    mixer: StyleMixer,
    targets_a: Tensor,
    targets_b: Tensor,
    guide_1: ProbabilityFn,
    guide_2: ProbabilityFn,
    *,
    judge_1: ProbabilityFn | None = None,
    judge_2: ProbabilityFn | None = None,
    features: tuple[str, str] = ("bald", "beard"),
    space: str = "w+",
    num_steps: int = 300,
    seed: int = 0,
    w_avg_samples: int = 10_000,
    search: str = "ranges",
    combine: str = "product",
    penalty_weight: float = 0.1,
    penalty_space: str = "image",
    refine_steps: int = 0,
    noise: str = "layers",
    threshold: float = 0.5,
    lpips: tuple[nn.Module | None, str | None] | None = None,
    progress: bool = False,
    **project_kwargs: Any,
) -> ProjectedTargetMix:
    """Project ``targets_a`` (feature 1 only) and ``targets_b`` (feature 2 only) and mix pair ``i`` with
    pair ``i`` by the guided layer search (``guide_1`` / ``guide_2``: ``images -> P(feature)``).

    ``judge_1`` / ``judge_2`` (e.g. the attribute evaluator's columns; best a network other than the
    guides) judge the targets, the projections and the mixes. ``lpips``: the result of
    :func:`reconstruction_lpips` (computed here when None).
    """
    if targets_a.shape != targets_b.shape:
        raise ConfigError(f"feature-1 and feature-2 targets must pair up one to one; got {tuple(targets_a.shape)} "
                          f"and {tuple(targets_b.shape)}")
    if (judge_1 is None) != (judge_2 is None):
        raise ConfigError("give both judges or neither")
    kw = dict(space=space, num_steps=num_steps, w_avg_samples=w_avg_samples, progress=progress, **project_kwargs)
    proj_a = mixer.project(targets_a, seed=seed, **kw)
    proj_b = mixer.project(targets_b, seed=seed + 1, **kw)
    guided = mixer.guided_mix(proj_a, proj_b, guide_1, guide_2, pairing="zip", noise=noise, search=search, combine=combine,
                              penalty_weight=penalty_weight, penalty_space=penalty_space, refine_steps=refine_steps)
    lp, why = lpips if lpips is not None else reconstruction_lpips(mixer)
    recon: dict[str, Any] = {"projection_distance": proj_a.distance, "lpips_available": lp is not None,
                             "lpips_missing": why}
    for side, proj, tgt in (("a", proj_a, targets_a), ("b", proj_b, targets_b)):
        ps = psnr(proj.images, tgt)
        entry: dict[str, Any] = {"psnr": [round(float(x), 3) for x in ps], "mean_psnr": round(float(ps.mean()), 3),
                                 "start_psnr": [round(float(e["psnr"]), 3) for e in proj.start_errors]}
        if lp is not None:
            with torch.no_grad():
                d = lp(proj.images.float().clamp(-1, 1), tgt.float().to(proj.images.device)).flatten().cpu()
            entry.update(lpips=[round(float(x), 4) for x in d], mean_lpips=round(float(d.mean()), 4))
        recon[side] = entry
    layers = layer_effects(mixer, proj_a, proj_b, guide_1, guide_2)
    guide = {"p1_projections_a": round(float(_probs(guide_1, proj_a.images).mean()), 4),
             "p1_projections_b": round(float(_probs(guide_1, proj_b.images).mean()), 4),
             "p2_projections_a": round(float(_probs(guide_2, proj_a.images).mean()), 4),
             "p2_projections_b": round(float(_probs(guide_2, proj_b.images).mean()), 4)}
    recon["guide"] = guide
    judged = None
    if judge_1 is not None:
        judged = {"threshold": threshold,
                  "targets_a": judge_images(judge_1, judge_2, targets_a.to(mixer.device), threshold),
                  "targets_b": judge_images(judge_1, judge_2, targets_b.to(mixer.device), threshold),
                  "projections_a": judge_images(judge_1, judge_2, proj_a.images, threshold),
                  "projections_b": judge_images(judge_1, judge_2, proj_b.images, threshold),
                  "mixes": judge_images(judge_1, judge_2, guided.images, threshold)}
    settings = {"space": space, "num_steps": num_steps, "seed": seed, "w_avg_samples": w_avg_samples, "search": search,
                "combine": combine, "penalty_weight": penalty_weight, "penalty_space": penalty_space,
                "refine_steps": refine_steps, "pairs": int(targets_a.shape[0])}
    return ProjectedTargetMix(targets_a.cpu(), targets_b.cpu(), proj_a, proj_b, guided, recon, layers, judged,
                              tuple(features), settings)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _carried(rows: list[dict[str, Any]], key: str, min_gain: float) -> str:
    picked = [str(r["layer"]) for r in rows if r[key] >= min_gain]
    return ", ".join(picked) if picked else f"none (no single layer raises it by {min_gain:.2f} or more)"


def render_report(result: ProjectedTargetMix, generator: str = "", min_gain: float = 0.1) -> str:
    """``report.md`` of a projected-target mix: reconstruction, judged rates, the layer table, the pairs."""
    f1, f2 = result.features
    s, rec = result.settings, result.reconstruction
    lines = [f"# Method B on projected targets: {f1} (a) x {f2} (b)", "",
             f"Generator: `{generator}`. {s['pairs']} pair(s); projection into {s['space']} for {s['num_steps']} steps "
             f"with the `{rec['projection_distance']}` distance (seed {s['seed']}); guided search `{s['search']}`, "
             f"combine `{s['combine']}`, penalty weight {s['penalty_weight']}.", "", "## Reconstruction of the targets", ""]
    if rec["lpips_available"]:
        lines += ["| side | mean PSNR (dB) | PSNR at the start | mean LPIPS |", "|---|---|---|---|"]
    else:
        lines += [f"**LPIPS not computed**: {rec['lpips_missing']} PSNR only.", "",
                  "| side | mean PSNR (dB) | PSNR at the start |", "|---|---|---|"]
    for side, name in (("a", f1), ("b", f2)):
        e = rec[side]
        start = sum(e["start_psnr"]) / len(e["start_psnr"])
        row = f"| {side} ({name} targets) | {e['mean_psnr']:.2f} | {start:.2f} |"
        lines.append(row + (f" {e['mean_lpips']:.4f} |" if rec["lpips_available"] else ""))
    if result.judged is not None:
        j = result.judged
        lines += ["", f"## Judged (probability >= {j['threshold']})", "",
                  f"| images | n | {f1} | {f2} | joint ({f1} and {f2}) | joint 95 % Wilson CI |", "|---|---|---|---|---|---|"]
        for key, label in (("targets_a", f"{f1} targets"), ("projections_a", "their projections"),
                           ("targets_b", f"{f2} targets"), ("projections_b", "their projections"), ("mixes", "**mixes**")):
            r = j[key]
            lo, hi = r["joint"]["ci95"]
            lines.append(f"| {label} | {r['joint']['n']} | {_pct(r['feature_1']['rate'])} | {_pct(r['feature_2']['rate'])} | "
                         f"{_pct(r['joint']['rate'])} | {_pct(lo)} – {_pct(hi)} |")
    g = rec.get("guide")
    lines += ["", "## What each style layer carries (single-layer swaps, guide classifiers)", ""]
    if g:
        lines += [f"The guides on the projections: mean P({f1}) {g['p1_projections_a']:.3f} for the {f1} projections and "
                  f"{g['p1_projections_b']:.3f} for the {f2} ones; mean P({f2}) {g['p2_projections_b']:.3f} for the {f2} "
                  f"projections and {g['p2_projections_a']:.3f} for the {f1} ones. A feature the guide does not see in "
                  "its own projection cannot be found in any layer.", ""]
    lines += [
              f"gain {f1}: P({f1}) of the {f2} projection with only this layer from the {f1} projection, minus P({f1}) "
              f"of the {f2} projection; gain {f2}: the reverse.", "",
              f"| ws index | band (px) | P({f1}) with layer from a | gain {f1} | P({f2}) with layer from b | gain {f2} |",
              "|---|---|---|---|---|---|"]
    for r in result.layers:
        lines.append(f"| {r['layer']} | {r['resolution']} | {r['p1_with_layer_from_a']:.3f} | {r['gain_1']:+.3f} | "
                     f"{r['p2_with_layer_from_b']:.3f} | {r['gain_2']:+.3f} |")
    lines += ["", f"Layers that carry {f1} (gain >= {min_gain}): {_carried(result.layers, 'gain_1', min_gain)}.",
              f"Layers that carry {f2} (gain >= {min_gain}): {_carried(result.layers, 'gain_2', min_gain)}.", "",
              "## Guided search", "",
              f"Best single split over all pairs: layers {result.guided.best_shared['layers_from_a']} from a "
              f"(mean guide P({f1}) {result.guided.best_shared['mean_p1']:.3f}, "
              f"P({f2}) {result.guided.best_shared['mean_p2']:.3f}).", "",
              f"| pair | layers from a ({f1}) | guide P({f1}) | guide P({f2}) |" + (" judged joint |" if result.judged else ""),
              "|---|---|---|---|" + ("---|" if result.judged else "")]
    for i, p in enumerate(result.guided.pairs):
        row = f"| {i} | {p['layers_from_a']} | {p['p1']:.3f} | {p['p2']:.3f} |"
        if result.judged:
            m = result.judged["mixes"]
            t = result.judged["threshold"]
            row += f" {'yes' if m['p1'][i] >= t and m['p2'][i] >= t else 'no'} |"
        lines.append(row)
    return "\n".join(lines) + "\n"
