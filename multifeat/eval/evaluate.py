"""Evaluate a set of generated images: do all requested features appear, and at what quality?

:func:`evaluate_images` measures, for images ``[N, 3, S, S]`` in [-1, 1]:

- the rate of each requested feature and the *joint rate* (all requested features present at once),
  each with a Wilson 95 % interval, as judged by an :class:`AttributeEvaluator` (threshold 0.5);
- the rates of every attribute the evaluator knows (to see unrequested side effects);
- FID and KID against real images of the target combination, with the feature extractor chosen by
  :func:`multifeat.eval.features.select_extractor` (its name is part of the result);
- diversity: mean pairwise distance of the samples in the evaluator's feature space, and its ratio to
  that of the real images;
- the evaluator's own per-attribute validation accuracy.

:func:`evaluate_generator` draws the images from any ``sample_fn(n, seed=...)`` first.
:func:`write_outputs` writes ``metrics.json``, ``report.md`` and ``samples.png`` (atomically);
:func:`log_result` adds a ``wandb.Table`` row (or CSV scalars) to a logger.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from multifeat.errors import ConfigError, DataError
from multifeat.eval import metrics as M
from multifeat.eval.features import EvaluatorFeatures, extract_features, select_extractor
from multifeat.utils.files import atomic_write_text, ensure_writable_dir
from multifeat.utils.images import save_grid

#: Seed of the SyntheticFaces draw used as real reference images (apart from training and evaluator seeds).
DEFAULT_REAL_SEED = 20_000


def check_features(features: Sequence[str], known: Sequence[str]) -> list[str]:
    """Validate requested feature names against the evaluator's attributes (error lists the valid ones)."""
    feats = [str(f).strip() for f in features if str(f).strip()]
    if not feats:
        raise ConfigError(f"no features requested; choose from {', '.join(known)}")
    unknown = [f for f in feats if f not in known]
    if unknown:
        raise ConfigError(f"unknown feature name(s) {', '.join(unknown)}; valid names: {', '.join(known)}")
    if len(set(feats)) != len(feats):
        raise ConfigError(f"feature names repeat: {', '.join(feats)}")
    return feats


def synthetic_real_images(features: Sequence[str], n: int, image_size: int, seed: int = DEFAULT_REAL_SEED) -> torch.Tensor:
    """``n`` SyntheticFaces images that carry all ``features`` (``require={f: True}``): ``[n, 3, S, S]``."""
    from multifeat.data import SyntheticFaces

    ds = SyntheticFaces(num_samples=int(n), image_size=int(image_size), seed=int(seed), require={f: True for f in features})
    chunks = []
    for start in range(0, len(ds), 256):
        items = ds.__getitems__(list(range(start, min(len(ds), start + 256))))
        chunks.append(torch.stack([it["image"] for it in items]))
    return torch.cat(chunks)


# ------------------------------------------------------------------------------------ data sources
#: How the report and the errors name each data source.
SOURCE_NAMES = {"synthetic": "SyntheticFaces", "celeba": "CelebA", "folder": "an image folder"}


def data_source_of(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """``{"source": "synthetic" | "celeba" | "folder", "root": str | None}``: the data a checkpoint was
    trained on, or None when it does not say.

    Read from ``checkpoint["multifeat"]["data_source"]`` when present, else from the data module's
    hyper-parameters that Lightning stores with every checkpoint of a fit
    (``datamodule_hyper_parameters``: ``source`` and ``root`` of AttributeDataModule,
    SwitchingDataModule, FeatureClassifierDataModule).
    """
    meta = checkpoint.get("multifeat") if isinstance(checkpoint.get("multifeat"), dict) else {}
    rec = meta.get("data_source")
    if not isinstance(rec, dict):
        rec = checkpoint.get("datamodule_hyper_parameters")
    if not isinstance(rec, dict):
        return None
    source = rec.get("source")
    if source is None and isinstance(rec.get("before"), dict) and "image_size" in rec:
        source = "synthetic"  # SwitchingDataModule without a source: its default
    if source not in SOURCE_NAMES:
        return None
    root = rec.get("root")
    return {"source": str(source), "root": None if root is None else str(root)}


def checkpoint_data_source(path: str | os.PathLike) -> dict[str, Any] | None:
    """:func:`data_source_of` of the checkpoint file ``path`` (CheckpointError if it cannot be read)."""
    from multifeat.io.checkpoints import load_checkpoint

    return data_source_of(load_checkpoint(path))


def describe_source(src: dict[str, Any] | None) -> str:
    if not src:
        return "unknown data"
    name = SOURCE_NAMES.get(src["source"], src["source"])
    return f"{name} (root {src['root']})" if src.get("root") and src["source"] != "synthetic" else name


def check_evaluator_matches(evaluator_src: dict[str, Any] | None, data_src: dict[str, Any] | None, evaluator_path: str,
                            data_what: str) -> None:
    """Refuse an evaluator trained on another kind of data than the images it would judge.

    ``evaluator_src``/``data_src``: :func:`data_source_of` results (None: unknown, not compared).
    Raises :class:`ConfigError` saying how to get an evaluator of the right data.
    """
    if not evaluator_src or not data_src or evaluator_src["source"] == data_src["source"]:
        return
    if data_src["source"] == "celeba":
        root = data_src.get("root") or "DIR"
        how = (f"Omit --evaluator to train and cache a CelebA evaluator (it reads CelebA under --celeba-root, default "
               f"'{root}'), or train one with `multifeat fit --config experiments/evaluator.yaml --data.init_args.source celeba "
               f"--data.init_args.root {root}` and pass its checkpoint")
    elif data_src["source"] == "synthetic":
        how = "Omit --evaluator to train and cache a SyntheticFaces evaluator, or pass one trained on SyntheticFaces"
    else:
        how = "Pass an evaluator trained on the same kind of images"
    raise ConfigError(
        f"evaluator '{evaluator_path}' was trained on {describe_source(evaluator_src)} but {data_what} comes from "
        f"{describe_source(data_src)}: its verdicts on these images would mean nothing. {how}"
    )


def _rate_entry(k: int, n: int) -> dict[str, Any]:
    lo, hi = M.wilson_interval(k, n)
    return {"rate": (k / n) if n else float("nan"), "count": int(k), "n": int(n), "ci95": [lo, hi]}


def _class_summary(probs: torch.Tensor, attributes: Sequence[str], features: Sequence[str], threshold: float) -> dict[str, Any]:
    n = probs.shape[0]
    cols = [list(attributes).index(f) for f in features]
    present = M.presence(probs, threshold)
    per_feature = {f: _rate_entry(int(present[:, c].sum()), n) for f, c in zip(features, cols)}
    joint_k = M.joint_count(probs[:, cols], threshold)
    return {
        "n": int(n),
        "feature_rates": per_feature,
        "joint": _rate_entry(joint_k, n),
        "attribute_rates": M.feature_rates(probs, attributes, threshold),
    }


@torch.no_grad()
def evaluate_images(
    images: torch.Tensor,
    features: Sequence[str] = ("bald", "beard"),
    evaluator=None,
    real_images: torch.Tensor | None = None,
    *,
    extractor: str = "auto",
    inception_weights: str | os.PathLike | None = None,
    allow_download: bool = False,
    threshold: float = 0.5,
    batch_size: int = 64,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    label: str = "generated",
    out_dir: str | os.PathLike | None = None,
    logger: Any = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure feature rates, joint rate, FID/KID and diversity of ``images``.

    Args:
        images: generated images ``[N, 3, S, S]`` in [-1, 1].
        features: the requested features (names of the evaluator's attributes).
        evaluator: an :class:`~multifeat.eval.evaluator.AttributeEvaluator`.
        real_images: real images of the target combination ``[M, 3, S', S']`` (FID/KID and the
            diversity reference need them; without them those entries are ``None``).
        extractor: ``auto`` | ``inception`` | ``evaluator`` (see :func:`select_extractor`).
        allow_download: let torch-fidelity download the InceptionV3 weights into the torch hub cache
            when no local file exists (off by default; needs internet).
        threshold: probability at which a feature counts as present (0.5).
        kid_subsets, kid_subset_size: KID's subsets (size capped at min(N, M)); ``seed`` fixes them.
        label: name of this image set in the report and the W&B table (e.g. ``raw``, ``restored``).
        out_dir: when given, :func:`write_outputs` writes metrics.json, report.md and samples.png there.
        logger: a W&B run / Lightning logger; when given, :func:`log_result` logs a table row.
        extra: free-form entries copied into the result (e.g. the generator checkpoint path).

    Returns a JSON-serialisable dict (see ``docs/evaluation.md`` for the keys).
    """
    if evaluator is None:
        raise ConfigError("evaluate_images needs an evaluator (see multifeat.eval.evaluator)")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise DataError(f"images must be a float tensor [N, 3, S, S] in [-1, 1], got {getattr(images, 'shape', type(images))}")
    if images.shape[0] == 0:
        raise DataError("no images to evaluate")
    attributes = list(evaluator.attributes)
    features = check_features(features, attributes)
    images = images.detach().float().cpu()

    probs = evaluator.predict_proba(images, batch_size=batch_size)
    result: dict[str, Any] = {
        "label": label,
        "image_size": int(images.shape[-1]),
        "features": list(features),
        "threshold": float(threshold),
        "seed": int(seed),
        **_class_summary(probs, attributes, features, threshold),
    }

    ext, ext_name = select_extractor(extractor, evaluator=evaluator, inception_weights=inception_weights,
                                     allow_download=allow_download)
    div_ext = ext if isinstance(ext, EvaluatorFeatures) else EvaluatorFeatures(evaluator)
    fake_div = extract_features(div_ext, images, batch_size)
    fake_feats = fake_div if ext is div_ext else extract_features(ext, images, batch_size)

    result["extractor"] = ext_name
    result["real"] = None
    result["fid"] = result["kid_mean"] = result["kid_std"] = None
    real_div = None
    if real_images is not None and real_images.shape[0] > 0:
        real_images = real_images.detach().float().cpu()
        real_probs = evaluator.predict_proba(real_images, batch_size=batch_size)
        real_summary = _class_summary(real_probs, attributes, features, threshold)
        result["real"] = {"n": real_summary["n"], "joint_rate": real_summary["joint"]["rate"],
                          "feature_rates": {f: v["rate"] for f, v in real_summary["feature_rates"].items()}}
        real_div = extract_features(div_ext, real_images, batch_size)
        real_feats = real_div if ext is div_ext else extract_features(ext, real_images, batch_size)
        if real_feats.shape[0] >= 2 and fake_feats.shape[0] >= 2:
            result["fid"] = M.fid_torchmetrics(real_feats, fake_feats)
            result["kid_mean"], result["kid_std"] = M.kid_torchmetrics(
                real_feats, fake_feats, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
            )
    result["diversity"] = {**M.diversity(fake_div, real_div), "space": f"evaluator features ({div_ext.num_features}-d), L2"}
    result["evaluator"] = {
        "attributes": attributes,
        "image_size": int(evaluator.image_size),
        "val_accuracy": dict(getattr(evaluator, "val_accuracy", {}) or {}),
        "path": str(getattr(evaluator, "checkpoint_path", "") or "") or None,
        "sha256": _file_sha256(getattr(evaluator, "checkpoint_path", None)),
    }
    if extra:
        result.update(extra)
    result = _finite_or_none(result)
    if out_dir is not None:
        result["files"] = write_outputs(result, images, out_dir)
    if logger is not None:
        log_result(result, logger)
    return result


def evaluate_generator(
    sample_fn: Callable[..., torch.Tensor],
    n: int = 256,
    features: Sequence[str] = ("bald", "beard"),
    evaluator=None,
    real_images: torch.Tensor | None = None,
    *,
    seed: int = 0,
    batch_size: int = 64,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Draw ``n`` images from ``sample_fn(k, seed=s) -> [k, 3, S, S]`` and evaluate them.

    Images are drawn in chunks of ``batch_size``; chunk ``i`` uses seed ``seed + i``, so the same
    ``seed`` gives the same images. ``transform`` (e.g. a face restorer) is applied to each chunk.
    Other keyword arguments go to :func:`evaluate_images`.
    """
    images = sample_images(sample_fn, n, seed=seed, batch_size=batch_size, transform=transform)
    return evaluate_images(images, features, evaluator, real_images, seed=seed, batch_size=batch_size, **kwargs)


@torch.no_grad()
def sample_images(sample_fn: Callable[..., torch.Tensor], n: int, seed: int = 0, batch_size: int = 64,
                  transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """``n`` images from ``sample_fn`` in chunks (chunk ``i`` with seed ``seed + i``), on the CPU."""
    if n < 1:
        raise ConfigError(f"number of images must be >= 1, got {n}")
    chunks = []
    for i, start in enumerate(range(0, n, batch_size)):
        x = sample_fn(min(batch_size, n - start), seed=seed + i)
        if transform is not None:
            x = transform(x)
        chunks.append(x.detach().float().cpu())
    return torch.cat(chunks)


def _file_sha256(path) -> str | None:
    """SHA-256 (hex) of the evaluator's file, or None when it has none (an in-memory evaluator)."""
    from multifeat.utils.files import file_sha256

    return file_sha256(path) if path and os.path.isfile(path) else None


def _finite_or_none(obj):
    """Replace NaN/Inf floats by None so metrics.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------ report


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def summary_row(result: dict[str, Any]) -> dict[str, Any]:
    """The flat row (one per evaluated set) for tables: W&B, CSV, side-by-side reports."""
    row: dict[str, Any] = {
        "label": result["label"],
        "n": result["n"],
        "features": "+".join(result["features"]),
        "joint_rate": result["joint"]["rate"],
        "joint_ci_low": result["joint"]["ci95"][0],
        "joint_ci_high": result["joint"]["ci95"][1],
    }
    for f, v in result["feature_rates"].items():
        row[f"rate_{f}"] = v["rate"]
    row.update({
        "fid": result.get("fid"),
        "kid_mean": result.get("kid_mean"),
        "kid_std": result.get("kid_std"),
        "extractor": result.get("extractor"),
        "diversity": result["diversity"]["generated"],
        "diversity_ratio": result["diversity"]["ratio"],
    })
    return row


def render_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown table comparing one or more evaluated sets (e.g. raw vs restored)."""
    feats = results[0]["features"]
    head = ["set", "n", *[f"{f} rate" for f in feats], f"joint ({'+'.join(feats)})", "joint 95% CI", "FID", "KID x1e3", "diversity ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lo, hi = r["joint"]["ci95"]
        kid = "n/a" if r.get("kid_mean") is None else f"{1e3 * r['kid_mean']:.2f} ± {1e3 * (r.get('kid_std') or 0):.2f}"
        cells = [r["label"], str(r["n"]), *[_pct(r["feature_rates"][f]["rate"]) for f in feats], _pct(r["joint"]["rate"]),
                 f"{_pct(lo)} – {_pct(hi)}", _num(r.get("fid")), kid, _num(r["diversity"]["ratio"], ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_report(result: dict[str, Any], compare: Sequence[dict[str, Any]] = ()) -> str:
    """The readable ``report.md`` of one evaluated set (plus optional other sets side by side)."""
    feats = result["features"]
    ev = result["evaluator"]
    out = [f"# Evaluation: {' + '.join(feats)}", ""]
    src = result.get("source")
    if src:
        out += [f"Images: {src}", ""]
    out += [
        f"{result['n']} images at {result['image_size']} px; a feature counts as present when the evaluator's probability "
        f">= {result['threshold']}. Joint = all requested features present in the same image.",
        "",
        render_table([result, *compare]),
        "",
        "## Per-feature rates",
        "",
        "| feature | present | rate | 95% CI (Wilson) | real images |",
        "|---|---|---|---|---|",
    ]
    real = result.get("real") or {}
    for f in feats:
        v = result["feature_rates"][f]
        real_rate = (real.get("feature_rates") or {}).get(f)
        out.append(f"| {f} | {v['count']}/{v['n']} | {_pct(v['rate'])} | {_pct(v['ci95'][0])} – {_pct(v['ci95'][1])} | {_pct(real_rate)} |")
    j = result["joint"]
    out.append(f"| **joint** | {j['count']}/{j['n']} | **{_pct(j['rate'])}** | {_pct(j['ci95'][0])} – {_pct(j['ci95'][1])} | "
               f"{_pct(real.get('joint_rate'))} |")
    others = {a: r for a, r in result["attribute_rates"].items() if a not in feats}
    if others:
        out += ["", "Other attributes (not requested): " + ", ".join(f"{a} {_pct(r)}" for a, r in others.items())]
    d = result["diversity"]
    out += [
        "",
        "## Image quality and diversity",
        "",
        f"- Feature extractor for FID/KID: **{result['extractor']}**",
        f"- FID: {_num(result.get('fid'))}",
        "- KID: " + ("n/a" if result.get("kid_mean") is None else f"{result['kid_mean']:.5f} ± {result.get('kid_std') or 0:.5f}"),
        f"- Real reference: {real.get('n', 0)} images" + (f" ({result['real_source']})" if result.get("real_source") else ""),
        f"- Diversity ({d['space']}): generated {_num(d['generated'])}, real {_num(d['real'])}, ratio {_num(d['ratio'], '.2f')}",
        "",
        "## Evaluator",
        "",
        f"Attribute classifier at {ev['image_size']} px" + (f" from `{ev['path']}`" if ev.get("path") else "")
        + (f" (SHA-256 `{ev['sha256']}`)" if ev.get("sha256") else "")
        + "; it is trained separately from any generator's feature classifier.",
        "",
    ]
    acc = ev.get("val_accuracy") or {}
    if acc:
        out += ["| attribute | validation accuracy |", "|---|---|"]
        out += [f"| {a} | {_pct(v)} |" for a, v in acc.items()]
    else:
        out.append("Validation accuracy: not recorded in this evaluator checkpoint.")
    out.append("")
    return "\n".join(out)


def write_outputs(result: dict[str, Any], images: torch.Tensor, out_dir: str | os.PathLike, grid_n: int = 64,
                  compare: Sequence[dict[str, Any]] = ()) -> dict[str, str]:
    """Write ``metrics.json``, ``report.md`` and ``samples.png`` (first ``grid_n`` images) into ``out_dir``."""
    out = ensure_writable_dir(out_dir)
    files = {"metrics": str(out / "metrics.json"), "report": str(out / "report.md"), "grid": str(out / "samples.png")}
    upscale = max(1, 128 // int(images.shape[-1]))
    save_grid(images[:grid_n], files["grid"], upscale=upscale)
    atomic_write_text(files["report"], render_report(result, compare))
    payload = {k: v for k, v in result.items() if k != "files"}
    payload["files"] = files
    if compare:
        payload["compare"] = [summary_row(c) for c in compare]
    atomic_write_text(files["metrics"], json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return files


# ---------------------------------------------------------------------------------------- logging


def log_result(result: dict[str, Any] | Sequence[dict[str, Any]], logger: Any, key: str = "eval/summary"):
    """Log one row per evaluated set: a ``wandb.Table`` under ``key`` plus ``eval/<label>/<metric>``
    scalars to a W&B run or Lightning ``WandbLogger``; only the scalars to any other Lightning logger
    (e.g. CSV). ``result`` is one result dict or a list of them. Returns the table (W&B) or None."""
    results = [result] if isinstance(result, dict) else list(result)
    rows = [summary_row(r) for r in results]
    scalars = {
        f"eval/{row['label']}/{k}": float(v)
        for row in rows
        for k, v in row.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    run = _wandb_run(logger)
    if run is not None:
        import wandb

        columns = list(dict.fromkeys(c for row in rows for c in row))
        table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
        run.log({key: table, **scalars})
        return table
    if hasattr(logger, "log_metrics"):
        logger.log_metrics(scalars)
        if hasattr(logger, "save"):
            logger.save()
    return None


def _wandb_run(logger: Any):
    try:
        import wandb
    except ImportError:
        return None
    run_cls = getattr(getattr(wandb, "sdk", None), "wandb_run", None)
    run_cls = getattr(run_cls, "Run", None)
    if run_cls is not None and isinstance(logger, run_cls):
        return logger
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        return logger.experiment
    return None


__all__ = [
    "DEFAULT_REAL_SEED",
    "SOURCE_NAMES",
    "check_evaluator_matches",
    "checkpoint_data_source",
    "data_source_of",
    "describe_source",
    "check_features",
    "evaluate_generator",
    "evaluate_images",
    "log_result",
    "render_report",
    "render_table",
    "sample_images",
    "summary_row",
    "synthetic_real_images",
    "write_outputs",
]
