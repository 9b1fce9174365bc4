"""The MultiFeat-Synth benchmark: every method, several seeds, the same judge, numbers in a table.

Protocol (:mod:`multifeat.bench.protocol`; values in ``multifeat/bench/protocols/synth.yaml``):

- SyntheticFaces at 32 px; feature 1 = ``bald``, feature 2 = ``beard``;
- **no training image carries both features**: synthetic training sets use ``joint_fraction: 0.0``,
  and every training set the benchmark builds is checked image by image before training
  (:func:`multifeat.data.guard.assert_no_joint`; a joint image stops the run). The one exception
  is method ``g``, the reference GAN trained *on* joint images (the only method that sees them);
- real joint images are used only for evaluation: the FID/KID reference, drawn with their own seed
  (20 000) away from the training seeds (< 10 000) and the evaluator's (10 000);
- methods ``a``-``g`` (:data:`multifeat.bench.methods.METHODS`), each trained for every seed
  (default 0, 1, 2); ``b``, ``c`` and ``d`` share phases 1 and 2 of a seed;
- every method's ``n`` samples (noise seeds ``sample_seed + i`` per chunk, the same for every method)
  are judged by one attribute evaluator (:func:`~multifeat.eval.evaluator_cache.cached_evaluator`,
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
    work/seed<k>/...                checkpoints; Method A in the pipeline's layout: method_a/phase{1,2}/ the
                                    shared phases 1 and 2, <method>/ each variant's phase 3

The CelebA variant (``experiments/celeba/bench.yaml``) runs the same protocol on CelebA with the
derived ``bald`` and ``beard`` groups; joint images are removed from every training set and the
evaluator is trained on CelebA.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning
import torch

from multifeat.bench.methods import (
    MethodSpec,
    resolve_methods,
    train_beard_gan,
    train_cgan,
    train_joint_gan,
    train_method_a,
    train_method_b,
)
from multifeat.bench.protocol import int_list, protocol_hash, validate_config
from multifeat.bench.report import build_results, run_paths, save_row, write_report
from multifeat.bench.training import Context, Trained, quiet
from multifeat.data import CelebADataset
from multifeat.errors import ConfigError, DataError
from multifeat.eval.evaluate import evaluate_images, sample_images, synthetic_real_images
from multifeat.eval.evaluator import DEFAULT_ATTRIBUTES
from multifeat.eval.evaluator_cache import cached_celeba_evaluator, cached_evaluator
from multifeat.mixing.distance import LPIPSWeightsMissingError, distance_weight_files
from multifeat.utils.files import atomic_write_text, ensure_writable_dir, file_sha256


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
    """The judge: ``cached_evaluator`` on SyntheticFaces (its own seed), or ``cached_celeba_evaluator`` on CelebA."""
    e = ctx.config["evaluator"]
    if ctx.synthetic:
        with quiet():
            ev, path = cached_evaluator(ctx.image_size, DEFAULT_ATTRIBUTES, cache_dir=e["cache_dir"], seed=int(e["seed"]),
                                        max_steps=int(e["max_steps"]), num_samples=int(e["num_samples"]),
                                        width=int(e["width"]), max_width=int(e["max_width"]), log=ctx.log)
        return ev, path
    # CelebA: the one CelebA judge of the package (`multifeat evaluate` and the pipeline train the same
    # network with the same recipe, CELEBA_JUDGE_RECIPE, whose balanced accuracy docs/evaluation.md measures)
    folder = Path(e["cache_dir"]) if e["cache_dir"] else work / "evaluator"
    d = ctx.config["data"]
    with quiet():
        ev, path = cached_celeba_evaluator(d["root"], ctx.image_size, DEFAULT_ATTRIBUTES, cache_dir=folder,
                                           max_steps=int(e["max_steps"]), width=int(e["width"]),
                                           max_width=int(e["max_width"]), batch_size=int(d["batch_size"]),
                                           seed=int(e["seed"]), accelerator=ctx.config["accelerator"], log=ctx.log)
    return ev, path


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
        return synthetic_real_images(ctx.features, n, ctx.image_size, seed=seed), real_description(ctx)
    d = ctx.config["data"]
    ds = CelebADataset(d["root"], image_size=ctx.image_size, attributes=list(ctx.features), derived=d["derived"],
                       require={f: True for f in ctx.features}, split="all")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ds), generator=g)[:n].tolist()
    imgs = torch.stack([ds[i]["image"] for i in order])
    return imgs, real_description(ctx)


# ------------------------------------------------------------------------------------ runs
def _train(ctx: Context, spec: MethodSpec, seed: int, out: Path) -> Trained:
    work = ensure_writable_dir(out / "work" / f"seed{seed}" / spec.id)
    ev = ctx.config["eval"]
    # The methods build their networks before fit() seeds the run, and torch seeds its default generator
    # randomly in every process: without this, each process would start from other initial weights.
    lightning.seed_everything(int(seed), workers=True, verbose=False)
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


def check_method_b_distance(cfg: dict[str, Any], specs: Sequence[MethodSpec]) -> None:
    """Method B's image distance (``method_b.distance``) is available, checked before anything trains.

    The LPIPS distance needs weight files that are never downloaded; without this check a run would
    stop at method e, after the judge and methods a-d had trained."""
    if not any(spec.key == "e" for spec in specs):
        return
    kind = cfg["method_b"]["distance"]
    try:
        distance_weight_files(kind)  # located, not loaded: the mixer loads them once, later
    except LPIPSWeightsMissingError as e:
        raise LPIPSWeightsMissingError(
            f"method_b.distance is {kind!r}, and method e cannot run on this machine; nothing was trained. {e}\n"
            "In a benchmark: --set method_b.distance=pixel (a protocol change, recorded in the hash), or "
            "--methods without e.") from None


def run_one(ctx: Context, spec: MethodSpec, seed: int, out: Path, evaluator, real: torch.Tensor,
            phash: str, eval_info: dict[str, Any]) -> dict[str, Any]:
    """Train, sample and evaluate one (method, seed); write its record and grid row; return the record."""
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
                          inception_weights=ev["inception_weights"], batch_size=int(ev["batch_size"]),
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
    seed_list = int_list(seeds if seeds is not None else cfg["seeds"], "seeds")
    cfg["seeds"], cfg["methods"] = seed_list, [s.key for s in specs]
    cfg = validate_config(cfg)
    if cfg["threads"]:
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
    if overwrite:  # Method A's phases are resumed or reused from their folders: clear them to redo them
        folders = {out / "work" / f"seed{s}" / "method_a" for s, spec in todo if spec.uses_method_a}
        folders |= {out / "work" / f"seed{s}" / spec.id for s, spec in todo if spec.uses_method_a}
        for folder in sorted(folders):
            if folder.is_dir():
                shutil.rmtree(folder)

    check_method_b_distance(cfg, [spec for _, spec in todo])
    log(f"[bench] {cfg['protocol']}: methods {','.join(s.key for s in specs)}, seeds {','.join(map(str, seed_list))}, "
        f"{len(todo)} of {len(specs) * len(seed_list)} runs to do -> {out}")
    evaluator, ev_path = get_evaluator(ctx, out / "work")
    eval_info = {"path": str(ev_path), "sha256_16": file_sha256(ev_path)[:16], "seed": int(cfg["evaluator"]["seed"]), "image_size": int(evaluator.image_size),
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


__all__ = ["get_evaluator", "hardware_info", "real_description", "real_images", "run_benchmark", "run_one"]
