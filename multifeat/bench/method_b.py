"""The images of the benchmark's method e (Method B): guided style mixes of a StyleGAN2-ADA trained on
joint-free faces, guided by two D2-style feature classifiers trained in the benchmark (never the judge).

Where the mixed styles come from (``method_b.styles``):

- ``projected`` (the default; the paper's procedure): **held-out** target images, ``n`` showing
  feature 1 without feature 2 (a bald face without a beard) and ``n`` showing feature 2 without
  feature 1, never one showing both, are projected into the generator's style space and pair ``i``
  is mixed with the guided layer search (:func:`multifeat.mixing.targets.mix_projected_targets`).
  SyntheticFaces targets are drawn with seed ``HELD_OUT_TARGET_SEED + seed`` (30 000 + the training
  seed), above every seed a training set of the benchmark draws from (training seeds < 10 000; the
  classifiers' real negatives use ``seed + 1``), the evaluator's (10 000) and the real joint
  images' (20 000). CelebA targets come from the official **test** split (training uses train and
  valid), in an order shuffled with the same seed, repeated when the split has fewer than ``n``.
  Every target set is checked by the no-joint-images guard (:func:`multifeat.data.guard.joint_flags`)
  and its counts are recorded; the record also holds the reconstruction quality of the projections
  (PSNR; LPIPS when its weight files are on this machine, else the reason), what each style layer
  carries and the guided search's table of layer splits.
- ``sampled`` (not the paper's procedure): map ``pool_factor * n`` random ``z`` (seed
  ``sample_seed``), draw them, and take the ``n`` most clearly feature-1-only styles (score
  ``p1 (1 - p2)`` of the guides) and the ``n`` most clearly feature-2-only ones (``p2 (1 - p1)``).

Either way :meth:`StyleMixer.guided_mix` picks each pair's layer split (``search``, ``combine``,
``penalty_weight``), and the mixes are the images the benchmark judges.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multifeat.bench.training import Context
from multifeat.data.celeba import CelebADataset
from multifeat.data.guard import JOINT, UNLABELLED, JointImageError, joint_flags
from multifeat.errors import ConfigError, DataError
from multifeat.mixing import StyleMixer
from multifeat.mixing.targets import (
    HELD_OUT_TARGET_SEED,
    ProbabilityFn,
    mix_projected_targets,
    reconstruction_lpips,
    render_report,
    synthetic_target_set,
)
from multifeat.utils.files import atomic_write_text

#: the values of ``method_b.styles``: the paper's procedure first (the default)
STYLES = ("projected", "sampled")
#: CelebA's official partition id of the test split
CELEBA_TEST = 2


def target_seed(ctx: Context, seed: int) -> int:
    """The seed of training seed ``seed``'s held-out targets: ``HELD_OUT_TARGET_SEED + seed`` (SyntheticFaces:
    the faces' seed; CelebA: the order in which test images are taken).

    SyntheticFaces: raises :class:`ConfigError` when it is not above every training seed (and their
    ``seed + 1``) or equals ``evaluator.seed`` or ``eval.real_seed``."""
    t = HELD_OUT_TARGET_SEED + int(seed)
    if not ctx.synthetic:
        return t
    training = [int(s) for s in ctx.config["seeds"]] + [int(seed)]
    reserved = {"evaluator.seed": int(ctx.config["evaluator"]["seed"]), "eval.real_seed": int(ctx.config["eval"]["real_seed"])}
    clash = [k for k, v in reserved.items() if v == t]
    if t <= max(training) + 1 or clash:
        why = f"equals {' and '.join(clash)}" if clash else f"is not above the training seeds {sorted(set(training))}"
        raise ConfigError(f"method e's held-out targets of seed {seed} would be SyntheticFaces of seed {t}, which {why}; "
                          f"training seeds must stay below 10000, and evaluator.seed / eval.real_seed away from {t}")
    return t


def check_targets(ds, features: tuple[str, str], derived: dict[str, list[str]] | None, what: str) -> dict[str, int]:
    """The no-joint-images guard on a target set: counts ``{images, labelled, joint, generated}``;
    :class:`JointImageError` naming ``what`` when a target carries both features (or none is labelled)."""
    flags = joint_flags(ds, features, derived)
    counts = {"images": int(flags.size), "labelled": int((flags != UNLABELLED).sum()), "joint": int((flags == JOINT).sum()),
              "generated": int((flags == UNLABELLED).sum())}
    if counts["joint"]:
        first = np.flatnonzero(flags == JOINT)[:5].tolist()
        raise JointImageError(f"{what}: {counts['joint']} of {counts['images']} targets carry all of {', '.join(features)} "
                              f"(first at {first}); method e's targets show one feature only, never both")
    if counts["labelled"] == 0:
        raise JointImageError(f"{what}: no target is labelled; the guard cannot check them")
    return counts


def _celeba_test_set(ctx: Context, feature: str, other: str) -> CelebADataset:
    d = ctx.config["data"]
    try:
        ds = CelebADataset(d["root"], image_size=ctx.image_size, attributes=list(ctx.features), derived=d["derived"],
                           require={feature: True, other: False}, split="test")
    except DataError as e:
        raise ConfigError(f"method_b.styles: 'projected' takes its held-out targets ({feature} without {other}) from the "
                          f"CelebA test split under data.root={d['root']!r}, and there are none: {e}. Add the official "
                          "partition file, or set method_b.styles=sampled (not the paper's procedure)") from e
    if not (ds.partitions == CELEBA_TEST).all():  # pragma: no cover - CelebADataset's split guarantees it
        raise DataError(f"CelebA test-split targets under '{d['root']}' include images of another split")
    return ds


def held_out_targets(ctx: Context, seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(targets_a, targets_b, info)``: ``n`` held-out images with feature 1 and without feature 2, ``n``
    with feature 2 and without feature 1 (``[n, 3, S, S]`` in [-1, 1]), each set checked by the guard.
    ``info`` says where they come from and holds the guard's counts per kind."""
    f1, f2 = ctx.features
    tseed = target_seed(ctx, seed)
    out: list[torch.Tensor] = []
    info: dict[str, Any] = {"source": ctx.source, "seed": tseed}
    for side, feat, other in (("a", f1, f2), ("b", f2, f1)):
        what = f"method e held-out {feat} targets (without {other}), seed {seed}"
        if ctx.synthetic:
            ds = synthetic_target_set(feat, other, n, ctx.image_size, tseed)
            rows = list(range(len(ds)))
            counts = check_targets(ds, ctx.features, None, what)
        else:
            ds = _celeba_test_set(ctx, feat, other)
            counts = check_targets(ds, ctx.features, ctx.config["data"]["derived"], what)
            order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(tseed)).tolist()
            rows = [order[i % len(ds)] for i in range(n)]
        out.append(torch.stack([ds[i]["image"] for i in rows]))
        info[side] = {"feature": feat, "without": other, "n": n, "distinct": len(set(rows)), "guard": counts}
    info["split"] = "synthetic, seed HELD_OUT_TARGET_SEED + training seed" if ctx.synthetic else "celeba test"
    return out[0], out[1], info


def _prob_fn(clf) -> ProbabilityFn:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return clf(x.to(clf.device)).float()

    fn.module = clf  # what guides: kept for the record and the tests
    return fn


@torch.no_grad()
def _probs(clf, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([clf(x.to(clf.device)).float().cpu() for x in images.split(batch_size)])


def _sampled(ctx: Context, mixer: StyleMixer, clf1, clf2, n: int, sample_seed: int):
    cfg = ctx.config["method_b"]
    pool = int(cfg["pool_factor"]) * n
    ws = mixer.sample_ws(pool, seed=int(sample_seed), truncation_psi=float(cfg["truncation_psi"]))
    imgs = mixer.synthesize(ws)
    p1, p2 = _probs(clf1, imgs), _probs(clf2, imgs)
    ia = torch.topk(p1 * (1 - p2), n).indices.sort().values
    ib = torch.topk(p2 * (1 - p1), n).indices.sort().values
    res = mixer.guided_mix(ws[ia.to(ws.device)], ws[ib.to(ws.device)], clf1, clf2, pairing="zip", search=str(cfg["search"]),
                           combine=str(cfg["combine"]), penalty_weight=float(cfg["penalty_weight"]))
    info = {"pool": pool, "pool_p1_mean": round(float(p1.mean()), 4), "pool_p2_mean": round(float(p2.mean()), 4),
            "a_p1_mean": round(float(p1[ia].mean()), 4), "b_p2_mean": round(float(p2[ib].mean()), 4)}
    return res, info


def _reconstruction(rec: dict[str, Any]) -> dict[str, Any]:
    """The run record's summary of :attr:`ProjectedTargetMix.reconstruction` (means per kind)."""
    out: dict[str, Any] = {"projection_distance": rec["projection_distance"], "lpips_available": rec["lpips_available"]}
    if not rec["lpips_available"]:
        out["lpips_missing"] = rec["lpips_missing"]
    for side in ("a", "b"):
        e = rec[side]
        out[f"psnr_{side}"] = e["mean_psnr"]
        out[f"start_psnr_{side}"] = round(sum(e["start_psnr"]) / len(e["start_psnr"]), 3)
        if rec["lpips_available"]:
            out[f"lpips_{side}"] = e["mean_lpips"]
    out["guide"] = rec["guide"]
    return out


def _projected(ctx: Context, mixer: StyleMixer, clf1, clf2, n: int, sample_seed: int, seed: int, work: Path | None):
    cfg = ctx.config["method_b"]
    ta, tb, targets = held_out_targets(ctx, seed, n)
    lpips = reconstruction_lpips(mixer)
    res = mix_projected_targets(mixer, ta, tb, _prob_fn(clf1), _prob_fn(clf2), features=tuple(ctx.features),
                                space=str(cfg["project_space"]), num_steps=int(cfg["project_steps"]), seed=int(sample_seed),
                                w_avg_samples=int(cfg["w_avg_samples"]), search=str(cfg["search"]), combine=str(cfg["combine"]),
                                penalty_weight=float(cfg["penalty_weight"]), lpips=lpips, progress=False)
    chosen = Counter(",".join(map(str, p["layers_from_a"])) for p in res.guided.pairs)
    info = {"targets": targets, "project_steps": int(cfg["project_steps"]), "space": str(cfg["project_space"]),
            "projection_seed": int(sample_seed), "reconstruction": _reconstruction(res.reconstruction),
            "layers": res.layers, "layer_splits": res.guided.candidates,
            "chosen_splits": {k: v for k, v in chosen.most_common()}}
    r = info["reconstruction"]
    where = f"SyntheticFaces of seed {targets['seed']}" if ctx.synthetic else "the CelebA test split"
    quality = (f"LPIPS {r['lpips_a']:.3f} / {r['lpips_b']:.3f}" if r["lpips_available"]
               else "LPIPS not computed (its weight files are missing; see the run record)")
    ctx.log(f"  method e, seed {seed}: {n} held-out {ctx.features[0]} and {n} {ctx.features[1]} targets ({where}, none "
            f"joint) projected into {info['space']} ({info['project_steps']} steps): PSNR {r['psnr_a']:.2f} / "
            f"{r['psnr_b']:.2f} dB, {quality}")
    if work is not None:  # the full result: per-image PSNR/LPIPS, every pair's split
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(work / "report.md", render_report(res, "method e's StyleGAN2-ADA (G_ema)"))
        atomic_write_text(work / "metrics.json", json.dumps({**res.to_dict(), "targets": targets}, indent=2) + "\n")
    return res.guided, info


def guided_mixes(ctx: Context, sg_module, clf1, clf2, n: int, sample_seed: int, seed: int,
                 work: Path | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Method B's images: ``n`` guided mixes of feature-1 styles (``a``) with feature-2 styles (``b``) of
    ``sg_module.G_ema``, guided by ``clf1`` / ``clf2`` (see the module doc for ``method_b.styles``).
    ``work``: where ``styles: projected`` writes its ``report.md`` and ``metrics.json``.

    Returns ``(mixes [n, 3, S, S] on the CPU, info for the run record)``."""
    cfg = ctx.config["method_b"]
    styles = cfg["styles"]
    if styles not in STYLES:
        raise ConfigError(f"method_b.styles must be 'projected' (held-out targets projected and mixed, the paper's "
                          f"procedure) or 'sampled' (random styles, not the paper's), got {styles!r}")
    mixer = StyleMixer(sg_module.G_ema, distance=str(cfg["distance"]), batch_size=int(cfg["batch_size"]))
    info: dict[str, Any] = {"styles": styles, "distance": getattr(mixer.distance, "name", str(cfg["distance"])),
                            "guides": [f"{type(c).__name__} for {f} (trained in the benchmark; not the judge)"
                                       for c, f in zip((clf1, clf2), ctx.features)]}
    if styles == "sampled":
        res, extra = _sampled(ctx, mixer, clf1, clf2, n, sample_seed)
    else:
        res, extra = _projected(ctx, mixer, clf1, clf2, n, sample_seed, seed, work)
    info.update(extra)
    info.update(search=str(cfg["search"]), combine=str(cfg["combine"]), best_shared_layers=res.best_shared["layers_from_a"],
                mix_p1_mean=round(sum(p["p1"] for p in res.pairs) / len(res.pairs), 4),
                mix_p2_mean=round(sum(p["p2"] for p in res.pairs) / len(res.pairs), 4))
    return res.images.detach().float().cpu(), info


__all__ = ["STYLES", "check_targets", "guided_mixes", "held_out_targets", "target_seed"]
