"""The methods of the MultiFeat-Synth benchmark: how each one is trained and sampled.

Every method gets training data without a single jointly-featured image (checked by
:func:`multifeat.data.guard.assert_no_joint` before training), except ``g``, the reference
that is trained on joint images on purpose. Feature 1 is ``features[0]`` (bald), feature 2
``features[1]`` (beard).

=====  ====================  ==========================================================================
key    id                    what is trained
=====  ====================  ==========================================================================
a      a-beard-gan           Phase1GAN on every feature-2 image (``require {beard: true, bald: false}``)
b      b-method-a-no-d2      Method A, Phase 3 with α3 = β2 = 0 (no D2 term), AdaIN off
c      c-method-a            Method A, AdaIN off (the paper's losses α = 1, 1, 0.1; β = 2, 30)
d      d-method-a-adain      Method A with the AdaIN addition after the snapshot
e      e-method-b            StyleGAN2-ADA on all joint-free faces + guided style mixing of projected
                             held-out bald and beard targets, guided by two D2-style feature
                             classifiers trained here (:mod:`multifeat.bench.method_b`)
f      f-cgan                ConditionalGAN on all joint-free faces, sampled at labels (bald, beard)
g      g-joint-gan           Phase1GAN on joint images: the only method that sees them (a quality reference)
=====  ====================  ==========================================================================

``b``, ``c`` and ``d`` are Method A run by the pipeline's phase functions (:func:`multifeat.pipeline.phases.run_phase`:
one way to build, run, resume and mark done a phase) on a config built from the protocol
(:func:`method_a_config`). They share Phase 1 (G1 + the negative bank) and Phase 2 (D2) of a seed:
trained once into ``<work>/method_a/phase{1,2}`` and reused; each variant's phase 3 lives in its own folder. Each ``train_*`` function returns a
:class:`Trained`: a ``sample(k, seed) -> [k, 3, S, S]`` function (or ready images for Method B),
the training seconds and the guard's counts of every training set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multifeat.bench.method_b import guided_mixes
from multifeat.bench.training import (
    Context,
    Trained,
    fit,
    save_checkpoint,
    validation_metrics,
)
from multifeat.data.guard import assert_no_joint, count_joint
from multifeat.errors import ConfigError
from multifeat.io.checkpoints import load_phase_module
from multifeat.phases.conditional_gan import ConditionalGAN
from multifeat.phases.feature_classifier import FeatureClassifier
from multifeat.phases.phase1 import Phase1GAN
from multifeat.phases.stylegan2ada import StyleGAN2ADA
from multifeat.pipeline.config import DEFAULT_CLASSES, instantiate
from multifeat.pipeline.layout import PhaseResult, RunLayout
from multifeat.pipeline.phases import Console, run_phase

#: the classes of Method A's phases and their data (the pipeline's defaults), and the other data modules
(PHASE1_MODEL, ATTRIBUTE_DATA), (CLASSIFIER_MODEL, CLASSIFIER_DATA), (PHASE3_MODEL, SWITCHING_DATA) = (
    DEFAULT_CLASSES["phase1"], DEFAULT_CLASSES["phase2"], DEFAULT_CLASSES["phase3"])
JOINT_FREE_DATA = "multifeat.data.guard.JointFreeDataModule"


@dataclass(frozen=True)
class MethodSpec:
    """One benchmarked method: its key letter, id (file names), table name and what it is."""

    key: str
    id: str
    name: str
    description: str
    sees_joint: bool = False
    uses_method_a: bool = False


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("a", "a-beard-gan", "GAN on beard images",
               "Phase1GAN (DCGAN, LSGAN) on every feature-2 image of the joint-free data: require {beard: true, bald: false}"),
    MethodSpec("b", "b-method-a-no-d2", "Method A without D2 terms",
               "Method A with alpha3 = beta2 = 0 (D2 plays no part in phase 3), AdaIN off", uses_method_a=True),
    MethodSpec("c", "c-method-a", "Method A",
               "Method A: phase 1 (bald GAN + negative bank), phase 2 (D2), phase 3 with the paper's losses, AdaIN off",
               uses_method_a=True),
    MethodSpec("d", "d-method-a-adain", "Method A + AdaIN",
               "Method A with the AdaIN addition: after the snapshot H, G3's features are combined with H's by AdaIN",
               uses_method_a=True),
    MethodSpec("e", "e-method-b", "Method B (StyleGAN2-ADA + mixing)",
               "StyleGAN2-ADA on all joint-free faces, then held-out bald targets and beard targets (never a joint "
               "one) projected into W+ and mixed pair by pair, the layers chosen by two D2-style feature classifiers "
               "trained in the benchmark (not the evaluator)"),
    MethodSpec("f", "f-cgan", "Conditional GAN at (bald, beard)",
               "ConditionalGAN (projection discriminator, multi-hot labels) on all joint-free faces, sampled at "
               "labels bald = beard = 1, a combination it never saw"),
    MethodSpec("g", "g-joint-gan", "GAN on joint images (reference)",
               "Phase1GAN on bald AND bearded images: the only method that sees joint images; a reference for quality",
               sees_joint=True),
)
BY_KEY = {m.key: m for m in METHODS}
BY_ID = {m.id: m for m in METHODS}


def resolve_methods(names: list[str] | str) -> list[MethodSpec]:
    """Method specs from keys (``a``) or ids (``a-beard-gan``), in benchmark order; unknown -> ConfigError."""
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    wanted = []
    for raw in names:
        n = str(raw).strip()
        if not n:
            continue
        spec = BY_KEY.get(n) or BY_ID.get(n)
        if spec is None:
            valid = ", ".join(f"{m.key} ({m.id})" for m in METHODS)
            raise ConfigError(f"unknown method '{n}'; valid methods: {valid}")
        wanted.append(spec)
    if not wanted:
        raise ConfigError("no method selected; choose from " + ", ".join(m.key for m in METHODS))
    return [m for m in METHODS if m in wanted]


# ------------------------------------------------------------------------------------ data
def attribute_data_spec(ctx: Context, seed: int, require: dict[str, bool] | None, *, joint_free: bool = True,
                        num_samples: int | None = None, batch_size: int | None = None) -> tuple[str, dict[str, Any]]:
    """``(class_path, init_args)`` of an attribute data module of the protocol's source. Synthetic:
    ``joint_fraction`` of the protocol (0.0) unless ``joint_free=False``; CelebA: joint images removed by
    :class:`JointFreeDataModule` unless the filter already excludes them or ``joint_free=False``."""
    d = ctx.config["data"]
    kw: dict[str, Any] = {"image_size": ctx.image_size, "require": require, "batch_size": int(batch_size or d["batch_size"]),
                          "val_fraction": 0.0, "seed": int(seed), "num_workers": int(d["num_workers"])}
    if ctx.synthetic:
        jf = d["joint_fraction"] if joint_free else None
        return ATTRIBUTE_DATA, {"source": "synthetic", "num_samples": int(num_samples or d["num_samples"]),
                                "synthetic": {"joint_fraction": jf, "cache": bool(d["cache"])}, **kw}
    f1, f2 = ctx.features
    excludes = bool(require) and (require.get(f1) is False or require.get(f2) is False)
    if joint_free and not excludes:
        return JOINT_FREE_DATA, {"exclude_joint": list(ctx.features), "source": ctx.source, "root": d["root"],
                                 "derived": d["derived"], **kw}
    return ATTRIBUTE_DATA, {"source": ctx.source, "root": d["root"], "derived": d["derived"], **kw}


def attribute_data(ctx: Context, seed: int, require: dict[str, bool] | None, *, joint_free: bool = True,
                   num_samples: int | None = None, batch_size: int | None = None):
    """The data module of :func:`attribute_data_spec`."""
    return instantiate(*attribute_data_spec(ctx, seed, require, joint_free=joint_free, num_samples=num_samples,
                                            batch_size=batch_size), "benchmark data")


def switching_data_spec(ctx: Context, seed: int) -> tuple[str, dict[str, Any]]:
    """Phase 3's data: feature-2 images (without feature 1) until the switch, then feature-1 images."""
    f1, f2 = ctx.features
    d, p3 = ctx.config["data"], ctx.config["method_a"]["phase3"]
    kw: dict[str, Any] = {"before": {f2: True, f1: False}, "after": {f1: True, f2: False}, "image_size": ctx.image_size,
                          "batch_size": int(d["batch_size"]), "val_fraction": 0.0, "seed": int(seed),
                          "num_workers": int(d["num_workers"])}
    if ctx.synthetic:
        kw.update(source="synthetic", num_samples=int(p3["num_samples"]),
                  synthetic={"joint_fraction": d["joint_fraction"], "cache": bool(d["cache"])})
    else:
        kw.update(source=ctx.source, root=d["root"], derived=d["derived"])
    return SWITCHING_DATA, kw


def classifier_data_spec(ctx: Context, seed: int, feature: str, section: dict[str, Any],
                         bank_dir: str | None) -> tuple[str, dict[str, Any]]:
    """D2-style data for ``feature``: positives against real negatives, degraded copies (and the bank)."""
    d = ctx.config["data"]
    other = [f for f in ctx.features if f != feature][0]
    kw: dict[str, Any] = {"feature": feature, "image_size": ctx.image_size, "bank_dir": bank_dir, "degraded": True,
                          "batch_size": int(d["batch_size"]), "val_fraction": float(section["val_fraction"]),
                          "seed": int(seed), "epoch_size": int(section["epoch_size"]), "num_workers": int(d["num_workers"])}
    if ctx.synthetic:
        kw.update(source="synthetic", num_samples=int(section["num_samples"]),
                  synthetic={"joint_fraction": d["joint_fraction"], "cache": bool(d["cache"])})
    else:  # CelebA has no joint_fraction: positives and real negatives both lack the other feature
        kw.update(source=ctx.source, root=d["root"], require={other: False})
    return CLASSIFIER_DATA, kw


def classifier_data(ctx: Context, seed: int, feature: str, section: dict[str, Any], bank_dir: str | None):
    """The data module of :func:`classifier_data_spec`."""
    return instantiate(*classifier_data_spec(ctx, seed, feature, section, bank_dir), "benchmark classifier data")


def guard(ctx: Context, data, what: str) -> dict[str, int]:
    counts = assert_no_joint(data, ctx.features, what)
    return counts


# ------------------------------------------------------------------------------------ DCGANs
def dcgan_kwargs(ctx: Context) -> dict[str, Any]:
    """The init arguments of the protocol's DCGAN (:class:`Phase1GAN`: methods a, g and Method A's G1)."""
    g = ctx.config["gan"]
    return {"image_size": ctx.image_size, "z_dim": int(g["z_dim"]), "g_width": int(g["g_width"]), "d_width": int(g["d_width"]),
            "max_width": int(g["max_width"]), "norm_d": str(g["norm_d"]), "lr_g": float(g["lr"]), "lr_d": float(g["lr"]),
            "num_fixed": 16, "ema_decay": None if g["ema_decay"] is None else float(g["ema_decay"]),
            "ema_rampup": None if g["ema_rampup"] is None else float(g["ema_rampup"]), "augment": g["augment"],
            "upsample": str(g["upsample"])}


def _dcgan(ctx: Context) -> Phase1GAN:
    return Phase1GAN(**dcgan_kwargs(ctx))


def _sampler(module, **kwargs):
    module.eval()

    def sample(k: int, seed: int) -> torch.Tensor:
        return module.sample(k, seed=seed, **kwargs)

    return sample


def _train_dcgan(ctx: Context, data, seed: int, work: Path, counts: dict[str, int]) -> Trained:
    """Train the protocol's DCGAN on ``data`` for ``gan.steps`` batches and save it as ``generator.ckpt``."""
    module = _dcgan(ctx)
    trainer, secs = fit(ctx, module, data, work, seed, max_steps=int(ctx.config["gan"]["steps"]))
    save_checkpoint(trainer, work / "generator.ckpt")
    return Trained(_sampler(module), secs, {"train": counts})


def train_beard_gan(ctx: Context, seed: int, work: Path) -> Trained:
    """(a) Phase1GAN on feature-2 images only."""
    f1, f2 = ctx.features
    data = attribute_data(ctx, seed, {f2: True, f1: False})
    counts = guard(ctx, data, f"method a (GAN on {f2} images), seed {seed}")
    return _train_dcgan(ctx, data, seed, work, counts)


def train_joint_gan(ctx: Context, seed: int, work: Path) -> Trained:
    """(g) Phase1GAN on joint images: deliberately NOT joint-free (a quality reference)."""
    f1, f2 = ctx.features
    n = ctx.config["joint_gan"]["num_samples"]
    data = attribute_data(ctx, seed, {f1: True, f2: True}, joint_free=False, num_samples=n)
    c = count_joint(data, ctx.features)
    counts = {"images": c["images"], "labelled": c["labelled"], "joint": c["joint"], "generated": c["generated"]}
    return _train_dcgan(ctx, data, seed, work, counts)


def train_cgan(ctx: Context, seed: int, work: Path) -> Trained:
    """(f) ConditionalGAN on all joint-free faces, sampled at (feature 1, feature 2) = (1, 1)."""
    f1, f2 = ctx.features
    g, c = ctx.config["gan"], ctx.config["cgan"]
    data = attribute_data(ctx, seed, None)
    counts = guard(ctx, data, f"method f (conditional GAN), seed {seed}")
    module = ConditionalGAN(attributes=[f1, f2], sample_labels={f1: True, f2: True}, image_size=ctx.image_size,
                            z_dim=int(g["z_dim"]), g_width=int(g["g_width"]), d_width=int(g["d_width"]),
                            max_width=int(g["max_width"]), norm_d=str(c["norm_d"]), embed_dim=int(c["embed_dim"]),
                            lr_g=float(g["lr"]), lr_d=float(g["lr"]), augment=g["augment"], upsample=str(g["upsample"]))
    trainer, secs = fit(ctx, module, data, work, seed, max_steps=int(g["steps"] if c["steps"] is None else c["steps"]))
    save_checkpoint(trainer, work / "generator.ckpt")
    return Trained(_sampler(module, labels={f1: True, f2: True}), secs, {"train": counts})


# ------------------------------------------------------------------------------------ Method A
PHASE3_VARIANTS = {
    "b": {"no_d2": True, "adain": False},
    "c": {"no_d2": False, "adain": False},
    "d": {"no_d2": False, "adain": True},
}


def phase3_epoch_cap(ctx: Context) -> dict[str, int]:
    """Phase 3's epochs hold ``method_a.phase3.num_samples`` images on every source.

    SyntheticFaces renders exactly that many images per stage, so no cap is needed. A CelebA stage holds
    every matching face of the training split (about 4 260 beard-only faces against 240 bald-only ones
    on the 64 px CelebA-HQ copy), so without a cap a beard epoch is about 17 times as long as a bald one
    and the phase's length follows the copy, not the protocol; the Trainer's ``limit_train_batches`` stops each epoch
    after ``num_samples // batch_size`` batches (the loader shuffles, so every epoch sees other faces).
    """
    if ctx.synthetic:
        return {}
    batches = int(ctx.config["method_a"]["phase3"]["num_samples"]) // int(ctx.config["data"]["batch_size"])
    if batches < 1:
        raise ConfigError(f"method_a.phase3.num_samples ({ctx.config['method_a']['phase3']['num_samples']}) is smaller "
                          f"than one batch (data.batch_size {ctx.config['data']['batch_size']}); an epoch needs at least one batch")
    return {"limit_train_batches": batches}


def method_a_config(ctx: Context, seed: int, key: str) -> dict[str, Any]:
    """The pipeline config (:mod:`multifeat.pipeline.config`) of Method-A variant ``key`` (b, c or d) for
    ``seed``: the protocol's values as ``class_path``/``init_args`` sections of the three phases. Phases 1
    and 2 are the same for b, c and d (so they are trained once per seed); phase 3 differs."""
    f1, f2 = ctx.features
    m = ctx.config["method_a"]
    g = ctx.config["gan"]
    nb, p2, p3 = m["negative_bank"], m["phase2"], m["phase3"]
    variant = PHASE3_VARIANTS[key]
    alpha = [float(a) for a in p3["alpha"]]
    beta = [float(b) for b in p3["beta"]]
    if variant["no_d2"]:
        alpha[2], beta[1] = 0.0, 0.0
    trainer: dict[str, Any] = {"accelerator": ctx.config["accelerator"], "devices": 1, "enable_progress_bar": False,
                               "enable_model_summary": False, "num_sanity_val_steps": 0, "limit_val_batches": 0}
    if ctx.config["precision"]:
        trainer["precision"] = ctx.config["precision"]
    data1 = attribute_data_spec(ctx, seed, {f1: True, f2: False})
    data2 = classifier_data_spec(ctx, seed, f1, p2, None)  # the pipeline fills bank_dir (phase 1's negatives)
    data3 = switching_data_spec(ctx, seed)
    phase3 = {"add_blocks": {int(k): int(v) for k, v in dict(p3["add_blocks"]).items()}, "alpha": alpha, "beta": beta,
              "f": str(p3["f"]), "f_tau": float(p3["f_tau"]), "lr_g": float(g["lr"]), "lr_d": float(g["lr"]),
              "snapshot_epoch": int(p3["snapshot_epoch"]), "adain_enabled": bool(variant["adain"]),
              "adain_at": str(p3["adain_at"]), "adain_content": str(p3["adain_content"]), "num_fixed": 16,
              "d2_views": int(p3["d2_views"]), "d2_view_p": float(p3["d2_view_p"]),
              "augment": g["augment"]}
    return {
        "name": f"bench-seed{seed}", "seed": int(seed), "logger": "none", "joint_free": [f1, f2], "trainer": trainer,
        "phase1": {"model": {"class_path": PHASE1_MODEL, "init_args": dcgan_kwargs(ctx)},
                   "data": {"class_path": data1[0], "init_args": data1[1]},
                   "trainer": {"max_steps": int(g["steps"])},
                   "callbacks": {"negative_bank": {"first_steps": int(nb["first_steps"]), "every_n_steps": int(nb["every_n_steps"]),
                                                   "per_save": int(nb["per_save"]), "max_images": int(nb["max_images"]),
                                                   "seed": int(seed)},
                                 "sample_grid": False}},
        "phase2": {"model": {"class_path": CLASSIFIER_MODEL,
                             "init_args": {"image_size": ctx.image_size, "feature": f1, "width": int(p2["width"]),
                                           "max_width": int(p2["max_width"]), "lr": float(p2["lr"])}},
                   "data": {"class_path": data2[0], "init_args": data2[1]},
                   "trainer": {"max_epochs": int(p2["epochs"])}},
        "phase3": {"model": {"class_path": PHASE3_MODEL, "init_args": phase3},
                   "data": {"class_path": data3[0], "init_args": data3[1]},
                   "trainer": {"max_epochs": int(p3["epochs"]), **phase3_epoch_cap(ctx)},
                   "callbacks": {"sample_grid": False}},
    }


def _training_set(layout: RunLayout, phase: str) -> dict[str, int]:
    jf = layout.read_done(phase).get("joint_free") or {}
    return {k: jf[k] for k in ("images", "labelled", "joint", "generated") if k in jf}


def method_a_phases(ctx: Context, seed: int, work: Path, shared_root: Path, key: str) -> tuple[RunLayout, list[PhaseResult]]:
    """Run (or resume, or reuse) the three phases of variant ``key`` with the pipeline's :func:`run_phase`.

    Phases 1 and 2 live in ``shared_root/phase{1,2}`` (one per seed, shared by b, c and d: the first
    variant trains them, the others find them finished); phase 3 lives in ``work`` (the variant's
    folder). Each folder has the pipeline's layout: ``checkpoints/{last,final}.ckpt``, ``done.json``,
    ``config.json``. A finished phase whose settings changed is trained again.
    """
    cfg = method_a_config(ctx, seed, key)
    layout = RunLayout(Path(shared_root), folders={"phase3": Path(work)})
    con = Console(line=lambda m: ctx.log(f"  Method A ({key}) {m}"), detail=lambda m: None, verbose=True,
                  resume_command="the same multifeat bench command")

    def d2_val(trainer, module, data, final):
        return {"d2_val": validation_metrics(ctx, module, data, layout.phase("phase2"))}

    def phase3_state(trainer, module, data, final):
        return {"snapshot_taken": bool(module.snapshot_taken), "adain_active": bool(module.adain_active),
                "d2_fake_mean": _metric(trainer, "d2/fake_mean")}

    results = [run_phase(cfg, layout, "phase1", con, after_fit=lambda *a: {}, stale="redo"),
               run_phase(cfg, layout, "phase2", con, after_fit=d2_val, stale="redo"),
               run_phase(cfg, layout, "phase3", con, after_fit=phase3_state, stale="redo")]
    return layout, results


def train_method_a(ctx: Context, seed: int, work: Path, shared_root: Path, key: str) -> Trained:
    """(b), (c), (d): Method A through the pipeline's phases; phases 1 and 2 shared by the variants of a seed."""
    layout, (r1, r2, r3) = method_a_phases(ctx, seed, work, shared_root, key)
    module = r3.module if r3.module is not None else load_phase_module(layout.final("phase3"), expect_phase="phase3")
    init = method_a_config(ctx, seed, key)["phase3"]["model"]["init_args"]
    shared_secs = float(r1.seconds) + float(r2.seconds)
    sets = {p: _training_set(layout, p) for p in ("phase1", "phase2", "phase3")}
    extra = {"alpha": init["alpha"], "beta": init["beta"], "adain_enabled": init["adain_enabled"],
             "snapshot_taken": r3.extra.get("snapshot_taken"), "adain_active": r3.extra.get("adain_active"),
             "d2_val": r2.extra.get("d2_val"), "phase3_seconds": round(r3.seconds, 2),
             "shared_reused": r1.status == "skipped" and r2.status == "skipped",
             "d2_fake_mean": r3.extra.get("d2_fake_mean")}
    return Trained(_sampler(module), r3.seconds + shared_secs, sets, shared_seconds=shared_secs, extra=extra)


def _metric(trainer, key: str) -> float | None:
    v = trainer.callback_metrics.get(key)
    return None if v is None else round(float(v), 4)


# ------------------------------------------------------------------------------------ Method B
def train_method_b(ctx: Context, seed: int, work: Path, n: int, sample_seed: int) -> Trained:
    """(e) StyleGAN2-ADA on all joint-free faces, two D2-style classifiers, guided style mixing
    (:func:`multifeat.bench.method_b.guided_mixes`: by default of held-out targets projected into W+).

    The mixes are drawn here (``n`` of them; projection / style seed ``sample_seed``), so the returned
    :class:`Trained` carries ``images`` and no sampler; ``work/mixes/`` holds the projected-target
    mix's ``report.md`` and ``metrics.json``.
    """
    f1, f2 = ctx.features
    cfg = ctx.config["method_b"]
    sg = cfg["stylegan"]
    data = attribute_data(ctx, seed, None, batch_size=int(sg["batch_size"]))
    counts = {"stylegan": guard(ctx, data, f"method e (StyleGAN2-ADA), seed {seed}")}
    module = StyleGAN2ADA(image_size=ctx.image_size, z_dim=int(sg["z_dim"]), w_dim=int(sg["w_dim"]),
                          mapping_layers=int(sg["mapping_layers"]), channel_base=int(sg["channel_base"]),
                          channel_max=int(sg["channel_max"]), lr=float(sg["lr"]), augment=sg["augment"], num_fixed=16)
    trainer, secs = fit(ctx, module, data, work / "stylegan", seed, max_steps=int(sg["steps"]))
    save_checkpoint(trainer, work / "stylegan" / "generator.ckpt")

    cl = cfg["classifier"]
    classifiers, val = {}, {}
    for feat in (f1, f2):
        cdata = classifier_data(ctx, seed, feat, cl, None)
        counts[f"classifier_{feat}"] = guard(ctx, cdata, f"method e ({feat} classifier), seed {seed}")
        clf = FeatureClassifier(image_size=ctx.image_size, feature=feat, width=int(cl["width"]), max_width=int(cl["max_width"]),
                                lr=float(cl["lr"]))
        tr, s = fit(ctx, clf, cdata, work / f"classifier_{feat}", seed, max_epochs=int(cl["epochs"]))
        save_checkpoint(tr, work / f"classifier_{feat}" / "final.ckpt")
        val[feat] = validation_metrics(ctx, clf, cdata, work / f"classifier_{feat}")
        clf.eval()
        classifiers[feat] = clf
        secs += s

    t0 = time.perf_counter()
    images, info = guided_mixes(ctx, module, classifiers[f1], classifiers[f2], n, sample_seed, seed, work=work / "mixes")
    gen = time.perf_counter() - t0
    extra = {"classifier_val": val, "ada_p": _ada_p(module), **info}
    return Trained(None, secs, counts, images=images, generate_seconds=gen, extra=extra)


def _ada_p(module) -> float | None:
    pipe = getattr(module, "augment_pipe", None)
    p = getattr(pipe, "p", None)
    return None if p is None else round(float(p), 4)


__all__ = ["BY_ID", "BY_KEY", "METHODS", "Context", "MethodSpec", "Trained", "attribute_data", "attribute_data_spec",
           "classifier_data", "classifier_data_spec", "dcgan_kwargs", "fit", "guided_mixes", "method_a_config",
           "method_a_phases", "resolve_methods", "switching_data_spec", "train_beard_gan", "train_cgan",
           "train_joint_gan", "train_method_a", "train_method_b"]
