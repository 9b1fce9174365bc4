"""Reporting for the MultiFeat-Synth benchmark: summary statistics, the markdown table, the bar chart,
the sample grids (drawn with Pillow; no plotting library needed), ``results.json`` and ``results.md``.

Statistics across seeds are the mean and the *sample* standard deviation (``ddof = 1``; ``None``
with a single seed). A value that could not be computed for a seed (``None``, e.g. FID without real
images) is left out of that metric's mean; the number of seeds used is kept beside it.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from multifeat.bench.methods import MethodSpec
from multifeat.utils.files import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from multifeat.utils.images import from_uint8, make_grid, to_uint8

#: metric name -> how to read it from a per-seed record
METRICS = ("joint_rate", "feature_1_rate", "feature_2_rate", "fid", "kid_mean", "diversity_ratio", "train_seconds")


def metric_value(record: dict[str, Any], name: str, features: Sequence[str]) -> float | None:
    """One number of a per-seed record (see :data:`METRICS`)."""
    if name == "joint_rate":
        return record["joint"]["rate"]
    if name == "feature_1_rate":
        return record["feature_rates"][features[0]]["rate"]
    if name == "feature_2_rate":
        return record["feature_rates"][features[1]]["rate"]
    if name == "diversity_ratio":
        return (record.get("diversity") or {}).get("ratio")
    return record.get(name)


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}`` over the non-None values; std is the sample std (ddof 1)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": list(values)}
    arr = np.asarray(vals, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size), "values": list(values)}


def summarise(records: Sequence[dict[str, Any]], features: Sequence[str]) -> dict[str, Any]:
    """Mean ± std across seeds of every metric in :data:`METRICS` for one method's records."""
    return {m: mean_std([metric_value(r, m, features) for r in records]) for m in METRICS}


# ------------------------------------------------------------------------------------ text
def _pm(stat: dict[str, Any], scale: float = 1.0, fmt: str = ".1f", unit: str = "") -> str:
    if stat["mean"] is None:
        return "n/a"
    s = format(stat["mean"] * scale, fmt)
    if stat["std"] is not None:
        s += " ± " + format(stat["std"] * scale, fmt)
    return s + unit


def format_row(spec_name: str, key: str, summary: dict[str, Any]) -> list[str]:
    """The cells of one method's row in the main table."""
    return [
        f"({key}) {spec_name}",
        _pm(summary["joint_rate"], 100, ".1f", " %"),
        _pm(summary["feature_1_rate"], 100, ".1f", " %"),
        _pm(summary["feature_2_rate"], 100, ".1f", " %"),
        _pm(summary["fid"], 1, ".3g"),
        _pm(summary["kid_mean"], 1, ".3g"),
        _pm(summary["diversity_ratio"], 1, ".2f"),
        _pm(summary["train_seconds"], 1, ".0f", " s"),
    ]


def main_table(rows: Sequence[tuple[str, str, dict[str, Any]]], features: Sequence[str]) -> str:
    """Markdown table: method, joint rate, feature rates, FID, KID, diversity ratio, train time.

    Rates in percent with one decimal; FID and KID with three significant digits (their scale depends on
    the feature extractor); diversity ratio with two decimals; train time in whole seconds."""
    f1, f2 = features[:2]
    head = ["method", f"joint rate ({f1} AND {f2})", f"{f1} rate", f"{f2} rate", "FID", "KID", "diversity", "train time"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, key, summary in rows:
        lines.append("| " + " | ".join(format_row(name, key, summary)) + " |")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _num(x: float | None, fmt: str = ".2f", scale: float = 1.0) -> str:
    return "n/a" if x is None else format(x * scale, fmt)


def per_seed_table(rows: Sequence[tuple[str, str, dict[str, Any]]], features: Sequence[str]) -> str:
    """One line per (method, seed): counts, Wilson 95 % interval of the joint rate, every metric."""
    f1, f2 = features[:2]
    head = ["method", "seed", "joint", "joint 95% CI (Wilson)", f1, f2, "FID", "KID", "diversity", "train (s)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for _name, key, rec in rows:
        j = rec["joint"]
        lines.append("| " + " | ".join([
            key, str(rec["seed"]), f"{j['count']}/{j['n']} ({_pct(j['rate'])})", f"{_pct(j['ci95'][0])} – {_pct(j['ci95'][1])}",
            _pct(rec["feature_rates"][f1]["rate"]), _pct(rec["feature_rates"][f2]["rate"]), _num(rec.get("fid"), ".3g"),
            _num(rec.get("kid_mean"), ".3g"), _num((rec.get("diversity") or {}).get("ratio")),
            _num(rec.get("train_seconds"), ".1f"),
        ]) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ images
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font has one size
        return ImageFont.load_default()


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def bar_chart(entries: Sequence[dict[str, Any]], path: str | os.PathLike, title: str, ylabel: str = "joint rate") -> Path:
    """Draw a bar chart of rates in [0, 1] with error bars and per-seed dots; write it as PNG (atomically).

    ``entries``: ``{"label": str, "mean": float | None, "std": float | None, "values": [float, ...],
    "highlight": bool}`` per bar (``highlight`` draws the bar in a second colour, e.g. the reference
    that sees joint images). The y axis runs from 0 to 100 %.
    """
    n = max(1, len(entries))
    bar_w, gap = 56, 34
    left, right, top, bottom = 70, 30, 80, 118
    plot_h = 300
    width = left + right + n * bar_w + (n + 1) * gap
    height = top + plot_h + bottom
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    f_title, f_axis, f_small = _font(16), _font(13), _font(11)
    d.text((left, 10), title, fill="black", font=f_title)
    x0, y0, y1 = left, top + plot_h, top

    def y_of(v: float) -> float:
        return y0 - max(0.0, min(1.0, v)) * plot_h

    for t in range(0, 101, 20):
        y = y_of(t / 100)
        d.line([(x0, y), (width - right, y)], fill=(225, 225, 225) if t else (0, 0, 0), width=1)
        d.text((x0 - 8, y), f"{t} %", fill="black", font=f_small, anchor="rm")
    d.line([(x0, y0), (x0, y1)], fill="black", width=1)
    d.text((14, y1 - 24), ylabel, fill="black", font=f_axis)
    for i, e in enumerate(entries):
        cx = left + gap + i * (bar_w + gap) + bar_w / 2
        colour = (214, 140, 60) if e.get("highlight") else (70, 110, 180)
        mean = e.get("mean")
        if mean is not None:
            d.rectangle([cx - bar_w / 2, y_of(mean), cx + bar_w / 2, y0], fill=colour)
            std = e.get("std")
            if std:
                lo, hi = y_of(mean - std), y_of(mean + std)
                d.line([(cx, lo), (cx, hi)], fill="black", width=2)
                d.line([(cx - 9, lo), (cx + 9, lo)], fill="black", width=2)
                d.line([(cx - 9, hi), (cx + 9, hi)], fill="black", width=2)
            d.text((cx, y_of(mean) - 4 - (0 if not std else (y_of(mean) - y_of(mean + std)))), f"{100 * mean:.1f}",
                   fill="black", font=f_small, anchor="md")
        for v in e.get("values") or []:
            if v is not None:
                d.ellipse([cx + bar_w / 2 - 10, y_of(v) - 3, cx + bar_w / 2 - 4, y_of(v) + 3], fill=(20, 20, 20))
        for k, line in enumerate(_wrap(str(e["label"]), 11)[:6]):
            d.text((cx, y0 + 8 + 15 * k), line, fill="black", font=f_small, anchor="ma")
    if any(e.get("highlight") for e in entries):
        d.rectangle([left, 34, left + 12, 46], fill=(214, 140, 60))
        d.text((left + 18, 40), "trained on joint images (reference)", fill="black", font=f_small, anchor="lm")
    d.text((width - right, 40), "bars: mean, whiskers: ± std, dots: single seeds", fill="black", font=f_small, anchor="rm")
    p = Path(path)
    atomic_write_bytes(p, _png_bytes(img))
    return p


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    if cur:
        lines.append(cur)
    return lines


def save_row(images: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save a row of images ``[k, 3, S, S]`` in [-1, 1] as one PNG strip without padding (lossless)."""
    arr = to_uint8(images).numpy()  # [k, S, S, 3]
    strip = np.concatenate(list(arr), axis=1)
    return atomic_write_bytes(path, _png_bytes(Image.fromarray(strip)))


def load_row(path: str | os.PathLike, image_size: int) -> torch.Tensor:
    """Read a strip written by :func:`save_row` back into ``[k, 3, S, S]`` in [-1, 1]."""
    arr = np.asarray(Image.open(path).convert("RGB"))
    k = arr.shape[1] // image_size
    tiles = np.stack([arr[:, i * image_size : (i + 1) * image_size] for i in range(k)])
    return from_uint8(torch.from_numpy(tiles.copy()))


def grid_image(rows: Sequence[torch.Tensor], upscale: int = 1) -> Image.Image:
    """One grid (a row per seed) as a PIL image; rows are ``[k, 3, S, S]`` in [-1, 1]."""
    k = max(r.shape[0] for r in rows)
    s = rows[0].shape[-1]
    padded = [torch.cat([r, r.new_full((k - r.shape[0], 3, s, s), -1.0)]) if r.shape[0] < k else r for r in rows]
    grid = make_grid(torch.cat(padded), nrow=k)
    if upscale > 1:
        grid = grid.repeat_interleave(upscale, dim=1).repeat_interleave(upscale, dim=2)
    return Image.fromarray(to_uint8(grid).numpy())


def save_grid_image(img: Image.Image, path: str | os.PathLike) -> Path:
    return atomic_write_bytes(path, _png_bytes(img))


def montage(panels: Sequence[tuple[str, Image.Image]], path: str | os.PathLike, label_width: int = 210) -> Path:
    """Stack labelled grids vertically (label on the left of each) into one PNG."""
    f = _font(13)
    width = label_width + max(p.width for _, p in panels) + 8
    height = sum(p.height + 6 for _, p in panels) + 6
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    y = 6
    for label, p in panels:
        img.paste(p, (label_width, y))
        for k, line in enumerate(_wrap(label, 28)[:5]):
            d.text((8, y + 4 + 16 * k), line, fill="black", font=f)
        y += p.height + 6
    return atomic_write_bytes(path, _png_bytes(img))


# ------------------------------------------------------------------------------------ result files
def run_paths(out: Path, spec: MethodSpec, seed: int) -> tuple[Path, Path]:
    """(record json, grid-row png) of one (method, seed)."""
    base = out / "runs" / spec.id
    return base / f"seed{seed}.json", base / f"seed{seed}.png"


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
        f"Judge: the attribute evaluator `{ev.get('path')}` (sha256 {ev.get('sha256_16') or 'unknown'}), the same for "
        "every method and seed (see *Evaluator* below).",
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
        f"(never a method's D2): `{ev.get('path')}` (sha256 of the file, first 16 hex digits: "
        f"{ev.get('sha256_16') or 'unknown'}). On the real joint images it finds {f1} AND {f2} in "
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


def _pct_or_na(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


__all__ = ["METRICS", "bar_chart", "build_results", "format_row", "grid_image", "load_row", "main_table", "mean_std",
           "metric_value", "montage", "per_seed_table", "render_markdown", "run_paths", "save_grid_image", "save_row",
           "summarise", "write_report"]
