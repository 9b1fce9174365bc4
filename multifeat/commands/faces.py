"""``multifeat faces``: a labelled grid of every SyntheticFaces attribute combination.

Rows are the (bald, beard) combinations, columns the (eyeglasses, smiling) combinations; each cell
shows ``--samples`` faces and, under them, the attributes they carry. Sample ``k`` of every cell
uses the same nuisance draw (skin, hair colour, pose, background), so a column of samples shows one
"person" with each attribute combination.

    multifeat faces --out docs/images/synthetic_faces_grid.png --size 64 --samples 3
"""

from __future__ import annotations

import argparse
import io
import itertools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from multifeat.data.common import ATTRIBUTES, check_power_of_two
from multifeat.data.synthetic import SyntheticFaces
from multifeat.errors import ConfigError
from multifeat.utils.files import atomic_write_bytes
from multifeat.utils.images import to_uint8

_SHORT = {"bald": "bald", "beard": "beard", "eyeglasses": "glasses", "smiling": "smiling"}
_BG = (255, 255, 255)
_INK = (20, 20, 20)


def combination_label(combo: dict[str, bool]) -> str:
    """'bald+beard+glasses' style label of the attributes present, 'none' if none is."""
    present = [_SHORT.get(k, k) for k, v in combo.items() if v]
    return "+".join(present) if present else "none"


def draw_grid(size: int = 64, samples: int = 3, seed: int = 0, scale: int = 1) -> Image.Image:
    """Render the labelled 4x4 grid of attribute combinations as a PIL RGB image."""
    check_power_of_two(size, "--size", 16, 256)
    if samples < 1 or scale < 1:
        raise ConfigError(f"--samples and --scale must be >= 1, got {samples} and {scale}")
    font = ImageFont.load_default()
    face = size * scale
    gap, pad, label_h = 2, 10, 14
    row_keys = list(itertools.product([False, True], repeat=2))  # (bald, beard)
    col_keys = list(itertools.product([False, True], repeat=2))  # (eyeglasses, smiling)
    cell_w = samples * face + (samples - 1) * gap
    cell_h = face + label_h
    head_w, head_h = 110, 30
    width = head_w + len(col_keys) * (cell_w + pad) + pad
    height = head_h + len(row_keys) * (cell_h + pad) + pad
    canvas = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(canvas)
    for c, (g, s) in enumerate(col_keys):
        x = head_w + pad + c * (cell_w + pad)
        draw.text((x, 4), "glasses" if g else "no glasses", fill=_INK, font=font)
        draw.text((x, 16), "smiling" if s else "neutral mouth", fill=_INK, font=font)
    for r, (b, d) in enumerate(row_keys):
        y = head_h + pad + r * (cell_h + pad)
        draw.text((6, y + face // 2 - 12), "bald" if b else "hair", fill=_INK, font=font)
        draw.text((6, y + face // 2), "beard" if d else "no beard", fill=_INK, font=font)
        for c, (g, s) in enumerate(col_keys):
            combo = dict(zip(ATTRIBUTES, (b, d, g, s)))
            ds = SyntheticFaces(num_samples=samples, image_size=size, seed=seed, require=combo)
            x = head_w + pad + c * (cell_w + pad)
            for k in range(samples):
                item = ds[k]
                arr = to_uint8(item["image"]).numpy()
                img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
                if scale > 1:
                    img = img.resize((face, face), Image.Resampling.NEAREST)
                canvas.paste(img, (x + k * (face + gap), y))
            draw.text((x, y + face + 2), combination_label(combo), fill=_INK, font=font)
    return canvas


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="multifeat faces", description="Draw a labelled grid of every SyntheticFaces attribute combination.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="synthetic_faces_grid.png", help="output PNG path (default: %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="face resolution, a power of two in [16, 256] (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=3, help="faces per combination (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: %(default)s)")
    parser.add_argument("--scale", type=int, default=1, help="enlarge each face by this integer factor (default: %(default)s)")
    args = parser.parse_args(argv)
    grid = draw_grid(args.size, args.samples, args.seed, args.scale)
    buf = io.BytesIO()
    grid.save(buf, format="PNG", optimize=True)
    path = atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {path} ({grid.width}x{grid.height}, 16 combinations x {args.samples} samples at {args.size} px)")
    return 0
