"""The MultiFeat-Synth benchmark: every method, several seeds, the same judge, numbers in a table.

Protocol (``experiments/bench_synth.yaml`` = :data:`DEFAULT_CONFIG`):

- SyntheticFaces at 32 px; feature 1 = ``bald``, feature 2 = ``beard``;
- **no training image carries both features**: synthetic training sets use ``joint_fraction: 0.0``,
  and every training set the benchmark builds is checked image by image before training
  (:func:`multifeat.eval.bench_data.assert_no_joint`; a joint image stops the run). The one exception
  is method ``g``, the reference GAN trained *on* joint images (the only method that sees them);
- real joint images are used only for evaluation: the FID/KID reference, drawn with their own seed
  (20 000) away from the training seeds (< 10 000) and the evaluator's (10 000);
- methods ``a``-``g`` (:data:`multifeat.eval.bench_methods.METHODS`), each trained for every seed
  (default 0, 1, 2); ``b``, ``c`` and ``d`` share phases 1 and 2 of a seed;
- every method's ``n`` samples (noise seeds ``sample_seed + i`` per chunk, the same for every method)
  are judged by one attribute evaluator (:func:`~multifeat.phases.attribute_evaluator.cached_evaluator`,
  trained on all attribute combinations with its own seed): feature rates, the joint rate with its
  Wilson 95 % interval, FID and KID against the real joint images (extractor named in the results),
  and diversity (mean pairwise distance in the evaluator's feature space, as a ratio to the real images').

:func:`run_benchmark` writes into the output folder::

    results.md, results.json        the table (mean ± std over seeds) and every number
    joint_rate.png                  joint rate per method, error bars = std over seeds, dots = seeds
    grids/<method>.png              a row of samples per seed (same noise seeds for every method)
    grids/montage.png               all methods' grids, labelled
    runs/<method>/seed<k>.json      one record per (method, seed); present = done (a re-run skips it)
    runs/<method>/seed<k>.png       that run's grid row
    work/seed<k>/...                checkpoints (method_a/ holds the shared phases 1 and 2)

The CelebA variant (``experiments/celeba/bench.yaml``) runs the same protocol on CelebA with the
derived ``bald`` and ``beard`` groups; joint images are removed from every training set and the
evaluator is trained on CelebA.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from multifeat.errors import ConfigError, DataError
from multifeat.eval.bench_methods import (
    METHODS,
    Context,
    MethodSpec,
    Trained,
    quiet,
    resolve_methods,
    train_beard_gan,
    train_cgan,
    train_joint_gan,
    train_method_a,
    train_method_b,
)
from multifeat.eval.bench_report import (
    bar_chart,
    grid_image,
    load_row,
    main_table,
    montage,
    per_seed_table,
    save_grid_image,
    save_row,
    summarise,
)
from multifeat.utils.config import set_dotted
from multifeat.utils.files import atomic_write_text, ensure_writable_dir

PROTOCOL = "MultiFeat-Synth"

#: The default protocol; ``experiments/bench_synth.yaml`` holds the same values (tested).
DEFAULT_CONFIG: dict[str, Any] = {
    "protocol": PROTOCOL,
    "features": ["bald", "beard"],
    "image_size": 32,
    "seeds": [0, 1, 2],
    "methods": ["a", "b", "c", "d", "e", "f", "g"],
    "accelerator": "auto",
    "precision": None,
    "threads": None,
    "data": {
        "source": "synthetic",
        "root": None,
        "derived": None,
        "num_samples": 2048,
        "joint_fraction": 0.0,
        "cache": True,
        "batch_size": 64,
        "num_workers": 0,
    },
    "evaluator": {
        "seed": 10000,
        "max_steps": 400,
        "num_samples": 4096,
        "width": 16,
        "max_width": 64,
        "cache_dir": None,
    },
    "eval": {
        "n": 256,
        "n_real": 256,
        "real_seed": 20000,
        "sample_seed": 0,
        "extractor": "auto",
        "inception_weights": None,
        "batch_size": 128,
        "kid_subsets": 100,
        "kid_subset_size": 1000,
        "grid_per_seed": 8,
    },
    "gan": {
        "z_dim": 64,
        "g_width": 32,
        "d_width": 32,
        "max_width": 128,
        "norm_d": "none",
        "lr": 0.0002,
        "ema_decay": None,
        "steps": 300,
    },
    "method_a": {
        "negative_bank": {"first_steps": 100, "every_n_steps": 5, "per_save": 16, "max_images": 320},
        "phase2": {"width": 16, "max_width": 64, "lr": 0.001, "num_samples": 1024, "epoch_size": 2048, "epochs": 3,
                   "val_fraction": 0.1},
        "phase3": {"num_samples": 1024, "epochs": 15, "snapshot_epoch": 9, "add_blocks": {16: 1},
                   "alpha": [1.0, 1.0, 0.1], "beta": [2.0, 30.0], "f": "identity", "f_tau": 0.9, "adain_at": "feat16",
                   "adain_content": "h"},
    },
    "method_b": {
        "stylegan": {"z_dim": 64, "w_dim": 64, "mapping_layers": 2, "channel_base": 512, "channel_max": 64,
                     "lr": 0.0025, "augment": "bgc", "batch_size": 32, "steps": 300},
        "classifier": {"width": 16, "max_width": 64, "lr": 0.001, "num_samples": 1024, "epoch_size": 2048, "epochs": 3,
                       "val_fraction": 0.1},
        "styles": "sampled",
        "pool_factor": 4,
        "truncation_psi": 1.0,
        "project_steps": 100,
        "w_avg_samples": 2000,
        "search": "cutoffs",
        "combine": "product",
        "penalty_weight": 0.1,
        "distance": "pixel-gradient",
        "batch_size": 64,
    },
    "cgan": {"embed_dim": 32, "norm_d": "none", "steps": 300},
    "joint_gan": {"num_samples": 2048},
}

#: ``--quick``: the same protocol with fewer steps, smaller samples and two seeds (<= 5 min on 2 CPU cores).
QUICK: dict[str, Any] = {
    "seeds": [0, 1],
    "eval": {"n": 128, "n_real": 128},
    "gan": {"steps": 60},
    "method_a": {
        "negative_bank": {"first_steps": 30, "every_n_steps": 3, "max_images": 160},
        "phase2": {"num_samples": 256, "epoch_size": 512, "epochs": 2},
        "phase3": {"num_samples": 512, "epochs": 8, "snapshot_epoch": 5},
    },
    "method_b": {"stylegan": {"steps": 60}, "classifier": {"num_samples": 256, "epoch_size": 512, "epochs": 2},
                 "pool_factor": 3},
    "cgan": {"steps": 60},
    "joint_gan": {"num_samples": 1024},
    "data": {"num_samples": 1024},
}

#: ``--smoke``: every code path at toy size (16 px, a few steps): checks the machinery, not the methods.
SMOKE: dict[str, Any] = {
    "image_size": 16,
    "seeds": [0, 1],
    "data": {"num_samples": 128, "batch_size": 16},
    "evaluator": {"max_steps": 20, "num_samples": 256},
    "eval": {"n": 24, "n_real": 24, "batch_size": 16, "kid_subsets": 10, "grid_per_seed": 4},
    "gan": {"z_dim": 16, "g_width": 8, "d_width": 8, "max_width": 16, "steps": 4},
    "method_a": {
        "negative_bank": {"first_steps": 4, "every_n_steps": 2, "per_save": 4, "max_images": 16},
        "phase2": {"width": 8, "max_width": 16, "num_samples": 32, "epoch_size": 32, "epochs": 1},
        "phase3": {"num_samples": 32, "epochs": 2, "snapshot_epoch": 1, "add_blocks": {8: 1}, "adain_at": "feat8"},
    },
    "method_b": {
        "stylegan": {"z_dim": 16, "w_dim": 16, "channel_base": 64, "channel_max": 16, "batch_size": 8, "steps": 3},
        "classifier": {"width": 8, "max_width": 16, "num_samples": 32, "epoch_size": 32, "epochs": 1},
        "pool_factor": 2,
        "project_steps": 3,
        "w_avg_samples": 100,
    },
    "cgan": {"embed_dim": 8, "steps": 4},
    "joint_gan": {"num_samples": 64},
}

PRESETS = {"quick": QUICK, "smoke": SMOKE}

#: keys that change how or where a run executes, not what it measures (left out of the protocol hash)
_RUNTIME_KEYS = ("seeds", "methods", "threads", "accelerator", "precision")


# ------------------------------------------------------------------------------------ config
def deep_merge(base: dict[str, Any], update: dict[str, Any], where: str = "config", strict: bool = True) -> dict[str, Any]:
    """``base`` with ``update`` merged in (nested dicts merged, other values replaced). With ``strict``,
    a key that ``base`` lacks is a :class:`ConfigError` naming it (``where`` says in which file)."""
    out = copy.deepcopy(base)
    for k, v in (update or {}).items():
        if strict and k not in out:
            raise ConfigError(f"{where}: unknown key '{k}'; expected one of {', '.join(map(str, out))}")
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "add_blocks":
            out[k] = deep_merge(out[k], v, f"{where}.{k}" if where else k, strict)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | os.PathLike | None = None, preset: str | None = None,
                overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The protocol: :data:`DEFAULT_CONFIG`, then the YAML file, then a preset (``quick``/``smoke``),
    then ``KEY=VALUE`` overrides (dotted key, YAML value). Validated."""
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"benchmark config '{p}' does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"benchmark config '{p}' is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"benchmark config '{p}' must be a mapping")
        cfg = deep_merge(cfg, loaded, str(p))
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset '{preset}'; expected one of {', '.join(PRESETS)}")
        cfg = deep_merge(cfg, PRESETS[preset], f"preset {preset}")
    for item in overrides:
        apply_override(cfg, item)
    return validate_config(cfg)


def apply_override(cfg: dict[str, Any], item: str) -> None:
    """``dotted.key=value`` (value parsed as YAML) into ``cfg``; the key must exist."""
    set_dotted(cfg, item, create=False, example="gan.steps=100", what="benchmark config")


def _int_list(value: Any, name: str) -> list[int]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    try:
        out = [int(v) for v in value]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} must be a list of integers, got {value!r}") from e
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"{name} must be non-empty and without repeats, got {value!r}")
    return out


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check the values that would otherwise fail late (or silently): returns ``cfg``."""
    feats = [str(f) for f in cfg["features"]]
    if len(feats) != 2 or feats[0] == feats[1]:
        raise ConfigError(f"features must be two different names (feature 1, feature 2), got {cfg['features']!r}")
    cfg["features"] = feats
    size = cfg["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 8 or size & (size - 1):
        raise ConfigError(f"image_size must be a power of two >= 8, got {size!r}")
    cfg["seeds"] = _int_list(cfg["seeds"], "seeds")
    resolve_methods(cfg["methods"])
    d = cfg["data"]
    if d["source"] not in ("synthetic", "celeba"):
        raise ConfigError(f"data.source must be synthetic or celeba, got {d['source']!r}")
    if d["source"] == "celeba" and not d.get("root"):
        raise ConfigError("data.source: celeba needs data.root (the folder holding celeba/); e.g. --set data.root=/data")
    if d["source"] == "synthetic":
        if d["joint_fraction"] not in (0, 0.0):
            raise ConfigError(f"data.joint_fraction must be 0.0 in this benchmark (no joint training images), got {d['joint_fraction']!r}")
        reserved = {int(cfg["evaluator"]["seed"]), int(cfg["eval"]["real_seed"])}
        bad = [s for s in cfg["seeds"] if s < 0 or s >= min(reserved)]
        if bad:
            raise ConfigError(f"seeds {bad} are not allowed: training seeds must be in [0, {min(reserved)}) so that training "
                              f"images never coincide with the evaluator's (seed {cfg['evaluator']['seed']}) or the real "
                              f"reference images (seed {cfg['eval']['real_seed']})")
    if cfg["method_b"]["styles"] not in ("sampled", "projected"):
        raise ConfigError(f"method_b.styles must be sampled or projected, got {cfg['method_b']['styles']!r}")
    p3 = cfg["method_a"]["phase3"]
    if not 0 <= int(p3["snapshot_epoch"]) < int(p3["epochs"]):
        raise ConfigError(f"method_a.phase3.snapshot_epoch must be in [0, epochs={p3['epochs']}), got {p3['snapshot_epoch']}")
    if int(cfg["eval"]["n"]) < 2 or int(cfg["eval"]["n_real"]) < 2:
        raise ConfigError("eval.n and eval.n_real must be >= 2 (FID needs two samples)")
    return cfg


def protocol_hash(cfg: dict[str, Any]) -> str:
    """Hash of everything that changes the numbers (not seeds/methods/threads/accelerator/cache folder)."""
    c = {k: v for k, v in cfg.items() if k not in _RUNTIME_KEYS}
    c = copy.deepcopy(c)
    c["evaluator"].pop("cache_dir", None)
    c["data"].pop("num_workers", None)
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ environment
def hardware_info() -> dict[str, Any]:
    """CPU model, cores, torch/lightning versions and threads, GPU (if any), OS."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    import lightning

    info = {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


# ------------------------------------------------------------------------------------ evaluator and real images
def get_evaluator(ctx: Context, work: Path):
    """The judge: ``cached_evaluator`` on SyntheticFaces (its own seed), or one trained on CelebA."""
    from multifeat.phases.attribute_evaluator import DEFAULT_ATTRIBUTES, cached_evaluator, load_evaluator

    e = ctx.config["evaluator"]
    if ctx.synthetic:
        with quiet():
            ev, path = cached_evaluator(ctx.image_size, DEFAULT_ATTRIBUTES, cache_dir=e.get("cache_dir"), seed=int(e["seed"]),
                                        max_steps=int(e["max_steps"]), num_samples=int(e["num_samples"]),
                                        width=int(e["width"]), max_width=int(e["max_width"]), log=ctx.log)
        return ev, path
    cfg = {"root": str(Path(ctx.config["data"]["root"]).resolve()), "image_size": ctx.image_size, "attributes": list(DEFAULT_ATTRIBUTES),
           "derived": ctx.config["data"].get("derived"), **{k: v for k, v in e.items() if k != "cache_dir"}}
    key = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = Path(e["cache_dir"]) if e.get("cache_dir") else work / "evaluator"
    path = folder / f"evaluator-celeba-S{ctx.image_size}-{key}.ckpt"
    if not path.is_file():
        ctx.log(f"training an attribute evaluator on CelebA ({ctx.image_size}px, {e['max_steps']} steps) -> {path}")
        with quiet():
            train_celeba_evaluator(ctx, path)
    ev = load_evaluator(path)
    return ev, path


def train_celeba_evaluator(ctx: Context, path: Path) -> Path:
    """An :class:`AttributeEvaluator` trained on CelebA's training split (all attribute combinations)."""
    import lightning as L

    from multifeat.data import AttributeDataModule
    from multifeat.eval.bench_methods import make_trainer, save_checkpoint
    from multifeat.phases.attribute_evaluator import DEFAULT_ATTRIBUTES, AttributeEvaluator

    e, d = ctx.config["evaluator"], ctx.config["data"]
    L.seed_everything(int(e["seed"]), workers=True, verbose=False)
    dm = AttributeDataModule(source=ctx.source, root=d["root"], derived=d.get("derived"), image_size=ctx.image_size,
                             attributes=list(DEFAULT_ATTRIBUTES), batch_size=int(d["batch_size"]), val_fraction=0.1,
                             seed=int(e["seed"]), num_workers=int(d.get("num_workers", 0)))
    model = AttributeEvaluator(image_size=ctx.image_size, attributes=DEFAULT_ATTRIBUTES, width=int(e["width"]),
                               max_width=int(e["max_width"]))
    trainer = make_trainer(ctx, path.parent, max_steps=int(e["max_steps"]))
    trainer.fit(model, datamodule=dm)
    make_trainer(ctx, path.parent, limit_val_batches=1.0).validate(model, datamodule=dm, verbose=False)
    return save_checkpoint(trainer, path)


def real_description(ctx: Context) -> str:
    """What the real reference images are (for the report)."""
    ev = ctx.config["eval"]
    n, seed = int(ev["n_real"]), int(ev["real_seed"])
    both = " and ".join(ctx.features)
    if ctx.synthetic:
        return f"SyntheticFaces with {both}, seed {seed}, {n} images"
    return f"CelebA images with {both} (all splits), up to {n} drawn with seed {seed}"


def real_images(ctx: Context) -> tuple[torch.Tensor, str]:
    """Real images with both features (evaluation only): ``([n_real, 3, S, S], description)``."""
    ev = ctx.config["eval"]
    n, seed = int(ev["n_real"]), int(ev["real_seed"])
    if ctx.synthetic:
        from multifeat.eval.evaluate import synthetic_real_images

        return synthetic_real_images(ctx.features, n, ctx.image_size, seed=seed), real_description(ctx)
    from multifeat.data import CelebADataset

    d = ctx.config["data"]
    ds = CelebADataset(d["root"], image_size=ctx.image_size, attributes=list(ctx.features), derived=d.get("derived"),
                       require={f: True for f in ctx.features}, split="all")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ds), generator=g)[:n].tolist()
    imgs = torch.stack([ds[i]["image"] for i in order])
    return imgs, real_description(ctx)


# ------------------------------------------------------------------------------------ runs
def run_paths(out: Path, spec: MethodSpec, seed: int) -> tuple[Path, Path]:
    """(record json, grid-row png) of one (method, seed)."""
    base = out / "runs" / spec.id
    return base / f"seed{seed}.json", base / f"seed{seed}.png"


def _train(ctx: Context, spec: MethodSpec, seed: int, out: Path) -> Trained:
    work = ensure_writable_dir(out / "work" / f"seed{seed}" / spec.id)
    ev = ctx.config["eval"]
    if spec.key == "a":
        return train_beard_gan(ctx, seed, work)
    if spec.key in ("b", "c", "d"):
        return train_method_a(ctx, seed, work, out / "work" / f"seed{seed}" / "method_a", spec.key)
    if spec.key == "e":
        return train_method_b(ctx, seed, work, int(ev["n"]), int(ev["sample_seed"]))
    if spec.key == "f":
        return train_cgan(ctx, seed, work)
    if spec.key == "g":
        return train_joint_gan(ctx, seed, work)
    raise ConfigError(f"no trainer for method {spec.key}")  # pragma: no cover


def run_one(ctx: Context, spec: MethodSpec, seed: int, out: Path, evaluator, real: torch.Tensor,
            phash: str, eval_info: dict[str, Any]) -> dict[str, Any]:
    """Train, sample and evaluate one (method, seed); write its record and grid row; return the record."""
    from multifeat.eval.evaluate import evaluate_images, sample_images

    ev = ctx.config["eval"]
    cpu0 = time.process_time()
    with quiet():
        trained = _train(ctx, spec, seed, out)
    images = trained.images
    if images is None:
        t0 = time.perf_counter()
        images = sample_images(trained.sample, int(ev["n"]), seed=int(ev["sample_seed"]), batch_size=int(ev["batch_size"]))
        trained.generate_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = evaluate_images(images, ctx.features, evaluator, real, extractor=str(ev["extractor"]),
                          inception_weights=ev.get("inception_weights"), batch_size=int(ev["batch_size"]),
                          kid_subsets=int(ev["kid_subsets"]), kid_subset_size=int(ev["kid_subset_size"]),
                          seed=int(ev["sample_seed"]), label=spec.id)
    eval_secs = time.perf_counter() - t0
    rec = {
        "protocol": ctx.config["protocol"], "config_hash": phash, "method": spec.id, "key": spec.key, "name": spec.name,
        "seed": int(seed), "sees_joint_images": spec.sees_joint, "n": res["n"], "image_size": res["image_size"],
        "features": list(ctx.features), "threshold": res["threshold"],
        "joint": res["joint"], "feature_rates": res["feature_rates"], "attribute_rates": res["attribute_rates"],
        "fid": res["fid"], "kid_mean": res["kid_mean"], "kid_std": res["kid_std"], "extractor": res["extractor"],
        "diversity": res["diversity"], "real": res["real"],
        "train_seconds": round(trained.train_seconds, 2), "shared_seconds": round(trained.shared_seconds, 2),
        "generate_seconds": round(trained.generate_seconds, 2), "eval_seconds": round(eval_secs, 2),
        "cpu_seconds": round(time.process_time() - cpu0, 2),
        "training_sets": trained.training_sets, "extra": trained.extra,
        "evaluator": {**eval_info, "val_accuracy": res["evaluator"]["val_accuracy"]},
        "sample_seed": int(ev["sample_seed"]), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    rec = _finite(rec)
    rec_path, row_path = run_paths(out, spec, seed)
    save_row(images[: int(ev["grid_per_seed"])], row_path)
    atomic_write_text(rec_path, json.dumps(rec, indent=2) + "\n")
    return rec


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _line(rec: dict[str, Any], features: Sequence[str]) -> str:
    j = rec["joint"]
    f1, f2 = features
    fid = "n/a" if rec.get("fid") is None else f"{rec['fid']:.3g}"
    kid = "n/a" if rec.get("kid_mean") is None else f"{rec['kid_mean']:.3g}"
    div = (rec.get("diversity") or {}).get("ratio")
    return (f"joint {100 * j['rate']:.1f}% [{100 * j['ci95'][0]:.1f}-{100 * j['ci95'][1]:.1f}] "
            f"{f1} {100 * rec['feature_rates'][f1]['rate']:.1f}% {f2} {100 * rec['feature_rates'][f2]['rate']:.1f}% "
            f"FID {fid} KID {kid} div {'n/a' if div is None else f'{div:.2f}'} | train {rec['train_seconds']:.1f} s")


def _pct_or_na(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def run_benchmark(config: dict[str, Any], out_dir: str | os.PathLike, methods: Sequence[str] | str | None = None,
                  seeds: Sequence[int] | str | None = None, overwrite: bool = False,
                  log: Callable[[str], None] = print, command: str | None = None) -> dict[str, Any]:
    """Run (or resume) the benchmark and write its report; returns the ``results.json`` content.

    ``methods`` / ``seeds`` default to the config's. A (method, seed) whose record exists in
    ``out_dir/runs`` is skipped (its record must come from the same protocol, else ``ConfigError``);
    ``overwrite=True`` redoes the selected ones (and the shared Method-A phases of their seeds).
    """
    cfg = validate_config(copy.deepcopy(config))
    specs = resolve_methods(list(methods) if methods is not None and not isinstance(methods, str) else (methods or cfg["methods"]))
    seed_list = _int_list(seeds if seeds is not None else cfg["seeds"], "seeds")
    cfg["seeds"], cfg["methods"] = seed_list, [s.key for s in specs]
    cfg = validate_config(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    out = ensure_writable_dir(out_dir)
    phash = protocol_hash(cfg)
    features = tuple(cfg["features"])
    ctx = Context(cfg, features, log=lambda m: log(f"[bench] {m}"))
    t_start, cpu_start, load_start = time.perf_counter(), time.process_time(), _loadavg()

    # which runs are done already
    todo: list[tuple[int, MethodSpec]] = []
    for seed in seed_list:
        for spec in specs:
            rec_path, row_path = run_paths(out, spec, seed)
            if rec_path.is_file() and overwrite:
                rec_path.unlink()
                if row_path.is_file():
                    row_path.unlink()
            if rec_path.is_file():
                try:
                    old = json.loads(rec_path.read_text())
                except ValueError as e:
                    raise DataError(f"run record '{rec_path}' is not valid JSON ({e}); delete it or use --overwrite") from e
                if old.get("config_hash") != phash:
                    raise ConfigError(
                        f"'{rec_path}' was made with other benchmark settings (protocol hash {old.get('config_hash')}, now "
                        f"{phash}); use another --out folder, or --overwrite to redo it")
                continue
            todo.append((seed, spec))
    if overwrite:
        for seed in {s for s, spec in todo if spec.uses_method_a}:
            shared = out / "work" / f"seed{seed}" / "method_a"
            if shared.is_dir():
                shutil.rmtree(shared)

    log(f"[bench] {cfg['protocol']}: methods {','.join(s.key for s in specs)}, seeds {','.join(map(str, seed_list))}, "
        f"{len(todo)} of {len(specs) * len(seed_list)} runs to do -> {out}")
    evaluator, ev_path = get_evaluator(ctx, out / "work")
    eval_info = {"path": str(ev_path), "seed": int(cfg["evaluator"]["seed"]), "image_size": int(evaluator.image_size),
                 "attributes": list(evaluator.attributes), "val_accuracy": dict(evaluator.val_accuracy)}
    real, real_desc = real_images(ctx) if todo else (None, real_description(ctx))

    done_count = 0
    total = len(specs) * len(seed_list)
    for seed in seed_list:
        for spec in specs:
            done_count += 1
            tag = f"({done_count}/{total}) {spec.id} seed {seed}"
            rec_path, _ = run_paths(out, spec, seed)
            if (seed, spec) not in todo:
                rec = json.loads(rec_path.read_text())
                log(f"[bench] {tag}: done earlier, skipped ({_line(rec, features)}) | elapsed {_clock(time.perf_counter() - t_start)}")
                continue
            rec = run_one(ctx, spec, seed, out, evaluator, real, phash, eval_info)
            log(f"[bench] {tag}: {_line(rec, features)} | elapsed {_clock(time.perf_counter() - t_start)}")

    records = {spec.id: [json.loads(run_paths(out, spec, s)[0].read_text()) for s in seed_list] for spec in specs}
    results = build_results(cfg, specs, records, phash, eval_info, real_desc)
    results["run"] = {
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "runs_done_now": len(todo),
        "runs_skipped": total - len(todo),
        "compute_seconds_all_runs": round(sum(r["train_seconds"] - r.get("shared_seconds", 0) + r["generate_seconds"]
                                              + r["eval_seconds"] for rs in records.values() for r in rs)
                                          + _shared_total(records), 1),
        "cpu_seconds_all_runs": round(sum(float(r.get("cpu_seconds") or 0) for rs in records.values() for r in rs), 1),
        "load_average_start": load_start,
        "load_average_end": _loadavg(),
        "command": command,
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    results["run"]["methods"], results["run"]["seeds"] = [s.key for s in specs], seed_list
    results["history"] = _history(out / "results.json", phash) + [results["run"]]
    results["hardware"] = hardware_info()
    write_report(results, records, specs, out)
    return results


def _history(path: Path, phash: str) -> list[dict[str, Any]]:
    """The ``run`` sections of earlier invocations into this folder (same protocol), oldest first."""
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if prev.get("config_hash") != phash:
        return []
    return list(prev.get("history") or ([prev["run"]] if prev.get("run") else []))


def _shared_total(records: dict[str, list[dict[str, Any]]]) -> float:
    """Seconds of the shared Method-A phases, counted once per seed."""
    per_seed: dict[int, float] = {}
    for rs in records.values():
        for r in rs:
            if r.get("shared_seconds"):
                per_seed[r["seed"]] = float(r["shared_seconds"])
    return sum(per_seed.values())


def build_results(cfg: dict[str, Any], specs: Sequence[MethodSpec], records: dict[str, list[dict[str, Any]]], phash: str,
                  eval_info: dict[str, Any], real_desc: str | None) -> dict[str, Any]:
    """``results.json``'s content (without the run/hardware sections)."""
    features = cfg["features"]
    methods = {}
    guard_sets, guard_joint = 0, 0
    for spec in specs:
        recs = records[spec.id]
        summary = summarise(recs, features)
        methods[spec.id] = {
            "key": spec.key, "name": spec.name, "description": spec.description, "sees_joint_images": spec.sees_joint,
            "summary": summary, "runs": {str(r["seed"]): r for r in recs},
        }
        if not spec.sees_joint:
            for r in recs:
                for counts in r["training_sets"].values():
                    guard_sets += 1
                    guard_joint += int(counts["joint"])
    first = next(iter(records.values()))[0]
    return {
        "protocol": cfg["protocol"], "config_hash": phash, "config": cfg, "features": features,
        "seeds": cfg["seeds"], "methods": methods,
        "std": "sample standard deviation over seeds (ddof = 1)",
        "evaluator": {**eval_info, "val_accuracy": eval_info.get("val_accuracy") or first["evaluator"].get("val_accuracy")},
        "extractor": first["extractor"],
        "real": {"description": real_desc, **(first.get("real") or {})},
        "guard": {"training_sets_checked": guard_sets, "joint_images_found": guard_joint},
    }


def write_report(results: dict[str, Any], records: dict[str, list[dict[str, Any]]], specs: Sequence[MethodSpec],
                 out: Path) -> dict[str, str]:
    """Write results.json, results.md, joint_rate.png, grids/<method>.png and grids/montage.png."""
    features = results["features"]
    f1, f2 = features
    cfg = results["config"]
    size = int(cfg["image_size"])
    files = {"results_json": str(out / "results.json"), "results_md": str(out / "results.md"),
             "chart": str(out / "joint_rate.png"), "grids": {}}
    # grids
    ensure_writable_dir(out / "grids")
    panels = []
    upscale = max(1, 64 // size)
    for spec in specs:
        rows = [load_row(run_paths(out, spec, s)[1], size) for s in results["seeds"]]
        img = grid_image(rows, upscale=upscale)
        p = out / "grids" / f"{spec.id}.png"
        save_grid_image(img, p)
        files["grids"][spec.id] = str(p)
        panels.append((f"({spec.key}) {spec.name}", img))
    montage(panels, out / "grids" / "montage.png")
    files["montage"] = str(out / "grids" / "montage.png")
    # chart
    entries = [{"label": f"({s.key}) {s.name}", "highlight": s.sees_joint,
                **{k: results["methods"][s.id]["summary"]["joint_rate"][k] for k in ("mean", "std", "values")}} for s in specs]
    bar_chart(entries, out / "joint_rate.png",
              f"{results['protocol']}: {f1} AND {f2} rate (mean ± std over {len(results['seeds'])} seeds)",
              ylabel="joint rate")
    results["files"] = files
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "results.md", render_markdown(results, specs))
    return files


def render_markdown(results: dict[str, Any], specs: Sequence[MethodSpec]) -> str:
    """``results.md``: protocol, the main table, per-seed numbers, the evaluator and the setup."""
    cfg = results["config"]
    f1, f2 = results["features"]
    seeds = results["seeds"]
    rows = [(s.name, s.key, results["methods"][s.id]["summary"]) for s in specs]
    seed_rows = [(s.name, s.key, results["methods"][s.id]["runs"][str(seed)]) for s in specs for seed in seeds]
    run, hw, ev = results.get("run", {}), results.get("hardware", {}), results["evaluator"]
    g = results["guard"]
    src = "SyntheticFaces" if cfg["data"]["source"] == "synthetic" else f"CelebA ({cfg['data']['root']})"
    out = [
        f"# {results['protocol']} benchmark",
        "",
        f"{src} at {cfg['image_size']} px. Feature 1 = **{f1}**, feature 2 = **{f2}**. No training image carries both "
        f"(checked image by image: {g['training_sets_checked']} training sets, {g['joint_images_found']} joint images), "
        f"except for method (g), the only one trained on joint images (a reference for quality). "
        f"Seeds: {', '.join(map(str, seeds))}; {cfg['eval']['n']} samples per run, the same noise seeds for every method.",
        "",
        f"## Results (mean ± std over {len(seeds)} seeds)",
        "",
        main_table(rows, results["features"]),
        "",
        f"Joint rate = fraction of samples in which the evaluator finds {f1} AND {f2} (probability >= 0.5 each). "
        f"FID and KID against {results['real'].get('description') or 'real joint images'}; "
        f"feature extractor: **{results['extractor']}**. Diversity = mean pairwise distance of the samples in the "
        "evaluator's feature space divided by that of the real joint images. Train time = seconds of training per seed "
        "(for b-d including the shared phases 1 and 2). std = sample standard deviation over seeds.",
        "",
        "![joint rate per method](joint_rate.png)",
        "",
        "## Per seed (joint rate with its Wilson 95 % interval)",
        "",
        per_seed_table(seed_rows, results["features"]),
        "",
        "## Methods",
        "",
    ]
    for s in specs:
        out.append(f"- **({s.key}) {s.name}** (`{s.id}`): {s.description}. Grid: `grids/{s.id}.png`")
    real = results.get("real") or {}
    out += [
        "",
        "## Evaluator",
        "",
        f"Attribute classifier at {ev.get('image_size')} px, trained on all attribute combinations with seed {ev.get('seed')} "
        f"(never a method's D2): `{ev.get('path')}`. On the real joint images it finds {f1} AND {f2} in "
        f"{_pct_or_na(real.get('joint_rate'))} of them.",
        "",
        "| attribute | validation accuracy |",
        "|---|---:|",
    ]
    out += [f"| {a} | {100 * v:.1f} % |" for a, v in (ev.get("val_accuracy") or {}).items()]
    out += [
        "",
        "## Setup",
        "",
        f"- Hardware: {hw.get('cpu_model')}, {hw.get('cpu_cores')} cores ({hw.get('cpu_cores_usable')} usable), "
        f"torch {hw.get('torch')} ({hw.get('torch_threads')} threads), lightning {hw.get('lightning')}"
        + (f", GPU {hw['gpu']}" if hw.get("gpu") else ""),
        f"- This invocation: {run.get('wall_seconds')} s wall, {run.get('cpu_seconds')} s CPU; {run.get('runs_done_now')} runs "
        f"trained, {run.get('runs_skipped')} taken from earlier; load average {run.get('load_average_start')} at the start, "
        f"{run.get('load_average_end')} at the end",
        f"- All invocations into this folder ({len(results.get('history') or [])}): "
        f"{round(sum(h.get('wall_seconds') or 0 for h in results.get('history') or []), 1)} s wall, "
        f"{round(sum(h.get('cpu_seconds') or 0 for h in results.get('history') or []), 1)} s CPU; the runs' own CPU time "
        f"(training, sampling, evaluation) adds up to {run.get('cpu_seconds_all_runs')} s",
        f"- Command: `{run.get('command') or 'multifeat bench'}`",
        f"- Protocol hash: `{results['config_hash']}`; the full configuration is in `results.json`",
        "",
    ]
    return "\n".join(out)


__all__ = ["DEFAULT_CONFIG", "METHODS", "PRESETS", "PROTOCOL", "QUICK", "SMOKE", "apply_override", "build_results",
           "deep_merge", "hardware_info", "load_config", "protocol_hash", "real_description", "real_images", "render_markdown",
           "run_benchmark", "run_one", "validate_config", "write_report"]
