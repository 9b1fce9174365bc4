"""What phase 2 is checked with: D2's mean probability per image source and on G1's samples, and
a grid of its verdicts (``phase2/samples/d2_check.png``)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from multifeat.data.common import SOURCE_NAMES
from multifeat.io.checkpoints import load_phase_module
from multifeat.pipeline.layout import RunLayout
from multifeat.utils.files import atomic_write_bytes
from multifeat.utils.images import to_uint8

#: Border colours of the D2 check: D2 says "has the feature" (p >= 0.5) / "does not".
YES_COLOUR, NO_COLOUR = (40, 170, 60), (210, 50, 40)


def save_verdict_grid(rows: list[tuple[str, Any, Any]], path: str | os.PathLike, upscale: int = 1, threshold: float = 0.5) -> Path:
    """One row per image source: its name, then each image framed in green (D2's probability >= ``threshold``)
    or red, with the probability written under it. ``rows``: (name, images [k,3,S,S] in [-1,1], probs [k])."""
    font = ImageFont.load_default()
    size = int(rows[0][1].shape[-1]) * max(1, int(upscale))
    border, text_h, gap = 3, 12, 4
    label_w = max(8 + int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(name, font=font)) for name, _, _ in rows)
    cell_w, cell_h = size + 2 * border + gap, size + 2 * border + text_h + gap
    ncol = max(len(imgs) for _, imgs, _ in rows)
    canvas = Image.new("RGB", (label_w + ncol * cell_w + gap, len(rows) * cell_h + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (name, imgs, probs) in enumerate(rows):
        y = gap + r * cell_h
        draw.text((4, y + size // 2), name, fill=(0, 0, 0), font=font)
        arr = to_uint8(imgs).numpy()
        for k in range(len(imgs)):
            p = float(probs[k])
            x = label_w + k * cell_w
            draw.rectangle([x, y, x + size + 2 * border - 1, y + size + 2 * border - 1],
                           fill=YES_COLOUR if p >= threshold else NO_COLOUR)
            canvas.paste(Image.fromarray(arr[k]).resize((size, size), Image.NEAREST), (x + border, y + border))
            draw.text((x + border, y + size + 2 * border), f"{p:.2f}", fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def d2_check(d2_ckpt: Path, data: Any, layout: RunLayout, log: Callable[[str], None], per_row: int = 8) -> dict[str, Any]:
    """D2's mean probability per validation source and on G1's samples, and a grid of its verdicts.

    Grid rows (``phase2/samples/d2_check.png``): validation images of each source (positive,
    real_negative, bank, degraded) and G1 samples, ``per_row`` each, every image framed green when
    D2 says it has the feature (probability >= 0.5) and red otherwise, its probability under it.
    A good D2 is green on positives and on G1's samples, red on every negative source.
    """
    d2 = load_phase_module(d2_ckpt, expect_phase="phase2")
    out: dict[str, Any] = {}
    rows: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    try:
        loader = data.val_dataloader()
    except Exception as e:  # noqa: BLE001 - the diagnostic is optional; say why it is missing
        log(f"phase2: no validation data for the D2 check ({e})")
        loader = None
    sums, counts, firsts = {}, {}, {}
    with torch.no_grad():
        for batch in loader or []:
            if not isinstance(batch, dict) or "source" not in batch:
                break
            p = d2(batch["image"]).float().reshape(-1)
            for sid in batch["source"].unique().tolist():
                m = batch["source"] == sid
                name = SOURCE_NAMES[sid] if sid < len(SOURCE_NAMES) else str(sid)
                sums[name] = sums.get(name, 0.0) + float(p[m].sum())
                counts[name] = counts.get(name, 0) + int(m.sum())
                have = firsts.setdefault(name, [])
                k = per_row - sum(len(t[0]) for t in have)
                if k > 0:
                    have.append((batch["image"][m][:k], p[m][:k]))
        for name in SOURCE_NAMES:
            if name in counts:
                out[f"d2/val_{name}_mean"] = round(sums[name] / counts[name], 4)
                rows.append((name, torch.cat([t[0] for t in firsts[name]]), torch.cat([t[1] for t in firsts[name]])))
        if layout.final("phase1").is_file():
            g1 = load_phase_module(layout.final("phase1"), expect_phase="phase1")
            g1_images = g1.sample(64, seed=0).float()
            g1_p = d2(g1_images).float().reshape(-1)
            out["d2/g1_samples_mean"] = round(float(g1_p.mean()), 4)
            rows.append(("g1_samples", g1_images[:per_row], g1_p[:per_row]))
    if rows:
        grid = layout.samples("phase2") / "d2_check.png"
        save_verdict_grid([(n, im.cpu(), pr.cpu()) for n, im, pr in rows], grid, upscale=2 if rows[0][1].shape[-1] <= 64 else 1)
        out["grid"] = str(grid)
        out["grid_rows"] = [n for n, _, _ in rows]
    shown = ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in out.items() if k.startswith("d2/"))
    if shown:
        log(f"phase2: mean D2 probability: {shown}")
    return out


__all__ = ["NO_COLOUR", "YES_COLOUR", "d2_check", "save_verdict_grid"]
