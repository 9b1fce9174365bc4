"""The forgetting experiment's outputs: ``records.jsonl``, ``summary.json``, ``table.md`` and ``forgetting.png``.

Rates at the end of phase 3 are given as the mean over seeds ± the half-width of a 95 % Student-t
interval of that mean (``t(0.975, n-1) · sd / sqrt(n)``; no interval with one seed). "kept vs b0" is the
per-seed difference of a variant's feature-1 rate and b0's (same seed, so same G1 and D2), averaged over
the seeds both have, in percentage points, with its interval.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from multifeat.utils.files import atomic_write_bytes, atomic_write_text

VARIANT_NAMES = {
    "b0": "b0: no D2 terms, no switch",
    "c0": "c0: D2 terms, no switch",
    "c": "c: D2 terms + switch",
    "d_h": "d_h: c + AdaIN (content H)",
    "d_g3": "d_g3: c + AdaIN (content G3)",
}


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float | None]:
    """(mean, half-width of the Student-t interval of the mean); half-width None for fewer than 2 values."""
    n = len(values)
    if n == 0:
        return float("nan"), None
    m = sum(values) / n
    if n < 2:
        return m, None
    from scipy.stats import t

    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return m, float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def intervals_agree(m1: float, h1: float | None, m2: float, h2: float | None) -> bool | None:
    """Each mean inside the other's interval (half-widths ``h1``, ``h2``); None when one has no interval."""
    if h1 is None or h2 is None:
        return None
    return bool(abs(m1 - m2) <= h1 and abs(m1 - m2) <= h2)


def _cell(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    m, hw = mean_interval(values)
    if math.isnan(m):
        return "–"
    return f"{scale * m:.{digits}f}" + (f" ± {scale * hw:.{digits}f}" if hw is not None else "")


def group(records: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Records by (variant, f, beta2), each list sorted by seed."""
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        out[(r["variant"], r["f"], r["beta2"])].append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in out.items()}


def _order(key: tuple) -> tuple:
    v, f, b = key
    return (0 if v == "b0" else 1, f or "", -(b or 0), list(VARIANT_NAMES).index(v))


def summarize(records: list[dict[str, Any]], features: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (variant, f, beta2): seeds, end-of-phase-3 rates (mean, half-width), and feature 1 kept vs b0."""
    f1, f2 = features
    groups = group(records)
    b0 = {r["seed"]: r for r in groups.get(("b0", None, None), [])}
    rows = []
    for key in sorted(groups, key=_order):
        recs = groups[key]
        row: dict[str, Any] = {"variant": key[0], "f": key[1], "beta2": key[2], "seeds": [r["seed"] for r in recs]}
        for m in (f1, f2, "joint"):
            row[m] = list(mean_interval([r["final"][m] for r in recs]))
            row[f"{m}_at_switch"] = list(mean_interval([_at(r, r["switch_step"])[m] for r in recs]))
        paired = [r["final"][f1] - b0[r["seed"]]["final"][f1] for r in recs if r["seed"] in b0]
        row["kept_vs_b0"] = list(mean_interval(paired)) if key[0] != "b0" and paired else None
        row["kept_vs_b0_seeds"] = len(paired) if key[0] != "b0" else None
        rows.append(row)
    return rows


def _at(rec: dict[str, Any], step: int) -> dict[str, Any]:
    return next(p for p in rec["points"] if p["step"] == step)


def table(records: list[dict[str, Any]], features: Sequence[str]) -> str:
    """Markdown: end-of-phase-3 rates (%) per (variant, f, beta2), mean ± 95 % interval over seeds, and the
    frozen D2's mean probability of feature 1 on the same samples (0-1)."""
    f1, f2 = features
    groups = group(records)
    b0 = {r["seed"]: r for r in groups.get(("b0", None, None), [])}
    lines = [f"| variant | f | β2 | seeds | {f1} at switch | {f1} | {f2} | joint | {f1} kept vs b0 (points) | D2's mean |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key in sorted(groups, key=_order):
        recs = groups[key]
        v, f, b = key
        sw = _cell([_at(r, r["switch_step"])[f1] for r in recs])
        cells = [_cell([r["final"][m] for r in recs]) for m in (f1, f2, "joint")]
        paired = [r["final"][f1] - b0[r["seed"]]["final"][f1] for r in recs if r["seed"] in b0]
        kept = "–" if v == "b0" or not paired else _cell(paired) + ("" if len(paired) == len(recs) else f" ({len(paired)} seeds)")
        d2 = [r["final"]["d2_mean"] for r in recs if "d2_mean" in r["final"]]
        d2_cell = _cell(d2, 1.0, 2) if len(d2) == len(recs) else "–"
        lines.append(f"| {VARIANT_NAMES[v]} | {f or '–'} | {'–' if b is None else f'{b:g}'} | {len(recs)} | {sw} | "
                     f"{' | '.join(cells)} | {kept} | {d2_cell} |")
    return "\n".join(lines) + "\n"


COLOURS = {"b0": (110, 110, 110), "c0": (31, 119, 180), "c": (255, 127, 14), "d_h": (44, 160, 44), "d_g3": (214, 39, 40)}


def _dashed(d, pts: list[tuple[float, float]], colour, width: int = 2, dash: float = 6.0) -> None:
    """A dashed polyline (PIL draws only solid ones)."""
    on, left = True, dash
    for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
        seg = ((xb - xa) ** 2 + (yb - ya) ** 2) ** 0.5
        t = 0.0
        while t < seg:
            step = min(left, seg - t)
            if on:
                d.line([(xa + (xb - xa) * t / seg, ya + (yb - ya) * t / seg),
                        (xa + (xb - xa) * (t + step) / seg, ya + (yb - ya) * (t + step) / seg)], fill=colour, width=width)
            t += step
            left -= step
            if left <= 0:
                on, left = not on, dash


def plot(records: list[dict[str, Any]], features: Sequence[str], path: str | os.PathLike,
         second: list[dict[str, Any]] | None = None, labels: tuple[str, str] = ("", "")) -> Path | None:
    """Rate vs phase-3 batch as PNG, one panel per (metric, (f, beta2) cell): feature 1, feature 2 and joint;
    with several cells the metrics are rows and the cells columns, with one cell the three metrics sit side
    by side. One line per variant (mean over seeds) with a band (min-max over seeds); b0 in every panel; a
    dotted line at the switch point. ``second``: another run's records, drawn as dashed mean lines (no band)
    so that two runs of the command can be compared at a glance; ``labels`` name the two runs. Drawn with
    PIL. None without records."""
    if not records:
        return None
    import io

    from PIL import Image, ImageDraw

    from multifeat.bench.report import _font

    f1, f2 = features
    groups = group(records)
    groups2 = group(second) if second else {}
    cells = sorted({(k[1], k[2]) for k in groups if k[0] != "b0"}, key=lambda c: (c[0], -c[1])) or [(None, None)]
    metrics = (f1, f2, "joint")
    panels = [(m, c) for c in cells for m in metrics]
    one = len(cells) == 1
    n_cols, n_rows = (3, 1) if one else (len(cells), 3)
    pw, ph = (280, 200) if one else (230, 150)
    left, top, gap_x, gap_y, legend_h = 62, 62, 26, 44, 28 * ((len(VARIANT_NAMES) + 2) // 3) + (24 if second else 0)
    width = max(left + n_cols * (pw + gap_x) + 10, 940)
    height = top + n_rows * (ph + gap_y) + legend_h + 10
    img = Image.new("RGB", (width, height), "white")
    over = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    d, do = ImageDraw.Draw(img), ImageDraw.Draw(over)
    ft, fa, fs = _font(14), _font(12), _font(10)
    d.text((8, 8), "G3's rates through phase 3: mean over seeds (line), min-max over seeds (band)", fill="black", font=ft)
    d.text((8, 28), "dotted: snapshot H + data switch (c, d_h, d_g3)" + (f"; dashed: {labels[1]}" if second else ""),
           fill="black", font=fa)
    steps_all = sorted({p["step"] for r in records for p in r["points"]})
    x_max = max(steps_all) or 1
    sw = next((r["switch_step"] for r in records), None)
    lines = []
    for m, (f, b) in panels:
        i, j = (0, metrics.index(m)) if one else (metrics.index(m), cells.index((f, b)))
        x0, y0 = left + j * (pw + gap_x), top + i * (ph + gap_y)

        def xy(step: float, v: float, x0=x0, y0=y0) -> tuple[float, float]:
            return x0 + pw * step / x_max, y0 + ph * (1 - max(0.0, min(1.0, v)))

        for t in (0, 0.5, 1):
            d.line([xy(0, t), xy(x_max, t)], fill=(225, 225, 225), width=1)
            if j == 0:
                d.text((x0 - 6, xy(0, t)[1]), f"{int(100 * t)} %", fill="black", font=fs, anchor="rm")
        d.rectangle([x0, y0, x0 + pw, y0 + ph], outline="black")
        if sw is not None:
            for yy in range(int(y0), int(y0 + ph), 6):
                d.line([(xy(sw, 0)[0], yy), (xy(sw, 0)[0], yy + 2)], fill="black")
        title = f"{m} rate" + ("" if f is None else f" (f = {f}, beta2 = {b:g})")
        d.text((x0 + pw / 2, y0 - 6), title, fill="black", font=fa, anchor="md")
        if i == n_rows - 1:
            for s in (0, sw, x_max):
                if s is not None:
                    d.text((xy(s, 0)[0], y0 + ph + 4), str(s), fill="black", font=fs, anchor="ma")
            d.text((x0 + pw / 2, y0 + ph + 16), "phase-3 batch", fill="black", font=fs, anchor="ma")
        for v in VARIANT_NAMES:
            key = ("b0", None, None) if v == "b0" else (v, f, b)
            for run_groups, dashed in ((groups, False), (groups2, True)):
                recs = run_groups.get(key)
                if not recs:
                    continue
                steps = [p["step"] for p in recs[0]["points"]]
                ys = [[_at(r, s)[m] for r in recs] for s in steps]
                if len(recs) > 1 and not dashed:
                    band = [xy(s, max(y)) for s, y in zip(steps, ys)] + [xy(s, min(y)) for s, y in reversed(list(zip(steps, ys)))]
                    do.polygon(band, fill=(*COLOURS[v], 45))
                lines.append(([xy(s, sum(y) / len(y)) for s, y in zip(steps, ys)], COLOURS[v], dashed))
    img.paste(over, (0, 0), over)
    d = ImageDraw.Draw(img)
    for pts, colour, dashed in lines:
        (_dashed(d, pts, colour) if dashed else d.line(pts, fill=colour, width=2))
    counts = {v: len(rs) for (v, _, _), rs in groups.items()}
    ly = top + n_rows * (ph + gap_y) + 4
    for k, v in enumerate(VARIANT_NAMES):
        if v not in counts:
            continue
        lx, row = left + (k % 3) * 300, ly + 24 * (k // 3)
        d.line([(lx, row + 7), (lx + 24, row + 7)], fill=COLOURS[v], width=3)
        d.text((lx + 30, row), f"{VARIANT_NAMES[v]}", fill="black", font=fa)
    if second:
        row = ly + 24 * ((len(VARIANT_NAMES) + 2) // 3)
        d.line([(left, row + 7), (left + 24, row + 7)], fill="black", width=2)
        d.text((left + 30, row), labels[0] or "this run", fill="black", font=fa)
        _dashed(d, [(left + 300, row + 7), (left + 324, row + 7)], "black")
        d.text((left + 330, row), labels[1] or "second run", fill="black", font=fa)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def agreement(first: list[dict[str, Any]], second: list[dict[str, Any]], features: Sequence[str]) -> list[dict[str, Any]]:
    """Do two runs of the experiment agree? Per (variant, f, beta2) row present in both and per end-of-phase
    rate (feature 1, feature 2, joint): both means with their 95 % intervals, and ``agree``: each run's
    mean lies inside the other's interval (rows with fewer than 2 seeds in a run cannot be checked: None)."""
    f1, f2 = features
    g1, g2 = group(first), group(second)
    rows = []
    for key in sorted(set(g1) & set(g2), key=_order):
        for m in (f1, f2, "joint"):
            (m1, h1), (m2, h2) = (mean_interval([r["final"][m] for r in g[key]]) for g in (g1, g2))
            ok = intervals_agree(m1, h1, m2, h2)
            rows.append({"variant": key[0], "f": key[1], "beta2": key[2], "metric": m, "first": [m1, h1],
                         "second": [m2, h2], "agree": ok})
    return rows


def agreement_table(rows: list[dict[str, Any]], labels: tuple[str, str] = ("run 1", "run 2")) -> str:
    """Markdown of :func:`agreement` (rates in %)."""
    def cell(mh):
        m, h = mh
        return f"{100 * m:.1f}" + ("" if h is None else f" ± {100 * h:.1f}")

    lines = [f"| variant | f | β2 | rate at the end | {labels[0]} | {labels[1]} | each mean inside the other's interval |",
             "|---|---|---:|---|---:|---:|---|"]
    for r in rows:
        verdict = "–" if r["agree"] is None else ("yes" if r["agree"] else "**no**")
        beta2 = "–" if r["beta2"] is None else f"{r['beta2']:g}"
        lines.append(f"| {VARIANT_NAMES[r['variant']]} | {r['f'] or '–'} | {beta2} | {r['metric']} | {cell(r['first'])} | "
                     f"{cell(r['second'])} | {verdict} |")
    return "\n".join(lines) + "\n"


def sample_sheet(out: str | os.PathLike, records: list[dict[str, Any]], path: str | os.PathLike, n: int = 8,
                 upscale: int = 2) -> Path | None:
    """PNG of stored samples: one row per variant of the first (f, beta2) cell (b0 first), for the lowest seed,
    ``n`` fixed-noise samples at the switch batch and ``n`` at the end of phase 3, side by side. None when
    no stored samples are found."""
    import io

    import torch
    from PIL import Image, ImageDraw

    from multifeat.bench.report import _font

    out = Path(out)
    groups = group(records)
    cells = sorted({(k[1], k[2]) for k in groups if k[0] != "b0"}, key=lambda c: (c[0], -c[1]))
    rows = []
    for v in VARIANT_NAMES:
        key = ("b0", None, None) if v == "b0" else ((v, *cells[0]) if cells else None)
        recs = groups.get(key) if key else None
        if not recs:
            continue
        rec = recs[0]
        samples: dict[int, torch.Tensor] = {}
        for rel in rec.get("samples", []):
            if (out / rel).is_file():
                samples.update(torch.load(out / rel, map_location="cpu", weights_only=True))
        sw, end = int(rec["switch_step"]), int(rec["points"][-1]["step"])
        if sw in samples and end in samples:
            rows.append((VARIANT_NAMES[v], rec["seed"], samples[sw][:n], samples[end][:n]))
    if not rows:
        return None
    s = int(rows[0][2].shape[-1]) * upscale
    label_w, gap, top, row_h = 250, 16, 40, s + 6
    width = label_w + 2 * n * s + gap + 10
    img = Image.new("RGB", (width, top + len(rows) * row_h + 6), "white")
    d = ImageDraw.Draw(img)
    fa, fs = _font(12), _font(11)
    x_end = label_w + n * s + gap
    d.text((label_w, 8), f"at the switch (batch {sw})", fill="black", font=fa)
    d.text((x_end, 8), f"end of phase 3 (batch {end})", fill="black", font=fa)
    for r, (name, seed, a, b) in enumerate(rows):
        y = top + r * row_h
        d.text((8, y + s / 2), f"{name}, seed {seed}", fill="black", font=fs, anchor="lm")
        for x0, batch in ((label_w, a), (x_end, b)):
            for k, im in enumerate(batch):
                tile = Image.fromarray(im.permute(1, 2, 0).numpy()).resize((s, s), Image.NEAREST)
                img.paste(tile, (x0 + k * s, y))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def write_outputs(out: str | os.PathLike, records: list[dict[str, Any]], features: Sequence[str],
                  extra: dict[str, Any] | None = None, second: list[dict[str, Any]] | None = None,
                  labels: tuple[str, str] = ("", "")) -> dict[str, str]:
    """``records.jsonl``, ``summary.json``, ``table.md``, ``forgetting.png`` in ``out`` (each written atomically);
    with ``second`` (another run's records) also ``agreement.md`` (:func:`agreement_table`) and the other
    run's means dashed in the figure."""
    out = Path(out)
    files = {"records": out / "records.jsonl", "summary": out / "summary.json", "table": out / "table.md",
             "figure": out / "forgetting.png"}
    atomic_write_text(files["records"], "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    summary = {"rows": summarize(records, features), **(extra or {})}
    if second:
        files["agreement"] = out / "agreement.md"
        rows = agreement(records, second, features)
        summary["agreement"] = {"labels": list(labels), "rows": rows}
        atomic_write_text(files["agreement"], agreement_table(rows, (labels[0] or "this run", labels[1] or "second run")))
    atomic_write_text(files["summary"], json.dumps(summary, indent=2) + "\n")
    atomic_write_text(files["table"], table(records, features))
    plot(records, features, files["figure"], second=second, labels=labels)
    if sample_sheet(out, records, out / "samples.png") is not None:
        files["samples"] = out / "samples.png"
    return {k: str(v) for k, v in files.items()}


__all__ = ["VARIANT_NAMES", "agreement", "agreement_table", "group", "intervals_agree", "mean_interval", "plot", "sample_sheet", "summarize", "table", "write_outputs"]
