"""``multifeat faces``: grids of labelled faces.

Without ``--celeba``: every SyntheticFaces attribute combination. Rows are the (bald, beard)
combinations, columns the (eyeglasses, smiling) combinations; each cell shows ``--samples`` faces
and, under them, the attributes they carry. Sample ``k`` of every cell uses the same nuisance draw
(skin, hair colour, pose, background), so a column of samples shows one "person" with each
attribute combination.

    multifeat faces --out docs/images/synthetic_faces_grid.png --size 64 --samples 3

With ``--celeba ROOT``: the real faces of a CelebA copy that carry one attribute combination in one
split (the first ``--samples`` in file order), with a caption saying how many match. ``--images-dir``
also writes them as PNG files (e.g. the real images of FID/KID), and ``--beside IMAGE=CAPTION`` puts
other grids (a generator's samples) to the left of the real faces, each with its caption, in one
picture:

    multifeat faces --celeba data/celebahq64 --require bald=1,beard=1 --split test --samples 16 \
        --out real_joint.png --images-dir real_joint/
"""

from __future__ import annotations

import argparse
import io
import itertools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from multifeat.data.celeba import CelebADataset
from multifeat.data.common import ATTRIBUTES, check_power_of_two, parse_flag
from multifeat.data.synthetic import SyntheticFaces
from multifeat.errors import ConfigError, DataError
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


# ---------------------------------------------------------------------- real faces (CelebA)


def parse_require_arg(text: str) -> dict[str, bool]:
    """``"bald=1,beard=1"`` -> ``{"bald": True, "beard": True}`` (values 1/0/-1/true/false)."""
    out: dict[str, bool] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(f"--require: {part!r} is not NAME=VALUE; expected e.g. bald=1,beard=1")
        out[name.strip()] = parse_flag(value.strip(), f"--require {name.strip()}")
    if not out:
        raise ConfigError(f"--require: {text!r} names no attribute; expected e.g. bald=1,beard=1")
    return out


def real_faces(root: str, require: dict[str, bool], split: str = "test", n: int = 16,
               size: int = 64) -> tuple[list[str], np.ndarray, int]:
    """The first ``n`` CelebA faces (file order) of ``split`` that match ``require``.

    Returns (file names, uint8 images ``[k, size, size, 3]``, number of matching faces in the split).
    """
    if n < 1:
        raise ConfigError(f"--samples must be >= 1, got {n}")
    ds = CelebADataset(root, image_size=size, attributes=list(require), require=require, split=split)
    k = min(n, len(ds))
    images = np.stack([to_uint8(ds[i]["image"]).numpy() for i in range(k)])
    return ds.files[:k], images, len(ds)


def tile(images: np.ndarray, cols: int, gap: int = 2) -> Image.Image:
    """Images ``[k, S, S, 3]`` uint8 in rows of ``cols`` on a white canvas, ``gap`` pixels apart."""
    k, side = images.shape[0], images.shape[1]
    cols = max(1, min(cols, k))
    rows = -(-k // cols)
    canvas = Image.new("RGB", (cols * side + (cols - 1) * gap, rows * side + (rows - 1) * gap), _BG)
    for i in range(k):
        r, c = divmod(i, cols)
        canvas.paste(Image.fromarray(np.ascontiguousarray(images[i]), "RGB"), (c * (side + gap), r * (side + gap)))
    return canvas


def side_by_side(panels: list[tuple[Image.Image, str]], pad: int = 8, line_h: int = 12) -> Image.Image:
    """Panels left to right, top-aligned, each with its caption under it (``"\\n"`` starts a new line)."""
    if not panels:
        raise ConfigError("nothing to draw: no panel")
    font = ImageFont.load_default()
    text_h = max(len(c.split("\n")) for _, c in panels) * line_h + 4
    width = pad + sum(p.width + pad for p, _ in panels)
    height = pad + max(p.height for p, _ in panels) + text_h + pad
    canvas = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(canvas)
    x = pad
    for panel, caption in panels:
        canvas.paste(panel.convert("RGB"), (x, pad))
        y = pad + max(p.height for p, _ in panels) + 4
        for line in caption.split("\n"):
            draw.text((x, y), line, fill=_INK, font=font)
            y += line_h
        x += panel.width + pad
    return canvas


def _parse_beside(spec: str) -> tuple[Image.Image, str]:
    path, sep, caption = spec.partition("=")
    if not sep or not path:
        raise ConfigError(f"--beside: {spec!r} is not IMAGE=CAPTION; expected e.g. runs/a/eval/grids/phase3.png='G3: joint 3 %'")
    try:
        with Image.open(path) as im:
            return im.convert("RGB"), caption.replace("\\n", "\n")
    except OSError as e:
        raise DataError(f"--beside: cannot read image '{path}': {e}") from e


def _write_png(image: Image.Image, path: str) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return str(atomic_write_bytes(path, buf.getvalue()))


def draw_real(args: argparse.Namespace) -> int:
    require = parse_require_arg(args.require)
    check_power_of_two(args.size, "--size", 16, 256)
    if args.cols < 1:
        raise ConfigError(f"--cols must be >= 1, got {args.cols}")
    panels = [_parse_beside(b) for b in args.beside]  # read before the data: a wrong path fails fast
    files, images, total = real_faces(args.celeba, require, args.split, args.samples, args.size)
    combo = ",".join(f"{k}={int(v)}" for k, v in require.items())
    caption = args.caption.replace("\\n", "\n") if args.caption else f"real CelebA faces, {args.split} split\n{combo}: {len(files)} of {total}"
    grid = tile(images, args.cols)
    if args.images_dir:
        for name, img in zip(files, images):
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(img), "RGB").save(buf, format="PNG")
            atomic_write_bytes(Path(args.images_dir) / (Path(name).stem + ".png"), buf.getvalue())
        print(f"wrote {len(files)} faces ({args.size} px PNG) to {args.images_dir}")
    picture = side_by_side(panels + [(grid, caption)])
    path = _write_png(picture, args.out)
    print(f"wrote {path} ({picture.width}x{picture.height}; {len(files)} of the {total} faces with {combo} "
          f"in the {args.split} split" + (f", beside {len(panels)} other grid(s))" if panels else ")"))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="multifeat faces",
                                     description="Draw a labelled grid of every SyntheticFaces attribute combination, "
                                                 "or (--celeba) the real faces of one attribute combination.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output PNG path (default: synthetic_faces_grid.png, "
                                                     "with --celeba celeba_faces.png)")
    parser.add_argument("--size", type=int, default=64, help="face resolution, a power of two in [16, 256] (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=None,
                        help="faces per combination (default 3); with --celeba the number of faces drawn (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: %(default)s)")
    parser.add_argument("--scale", type=int, default=1, help="enlarge each face by this integer factor (default: %(default)s)")
    real = parser.add_argument_group("real faces (CelebA)")
    real.add_argument("--celeba", metavar="ROOT", default=None,
                      help="CelebA copy (the folder holding celeba/, or that folder): draw its real faces instead")
    real.add_argument("--require", default="bald=1,beard=1",
                      help="attribute combination NAME=1|0,... (CelebA columns or bald, beard, eyeglasses, smiling) (default: %(default)s)")
    real.add_argument("--split", default="test", choices=["train", "valid", "test", "all"],
                      help="official CelebA split (default: %(default)s)")
    real.add_argument("--cols", type=int, default=4, help="faces per row (default: %(default)s)")
    real.add_argument("--caption", default=None, help="caption under the real faces ('\\n' breaks the line; default: the split, "
                                                       "the combination and the counts)")
    real.add_argument("--images-dir", default=None, help="also write the drawn faces as PNG files into this folder")
    real.add_argument("--beside", action="append", default=[], metavar="IMAGE=CAPTION",
                      help="another picture (e.g. a generator's grid) to the left of the real faces, with its caption "
                           "('\\n' breaks the line); repeatable, drawn in order")
    args = parser.parse_args(argv)
    if args.celeba is not None:
        args.samples = 16 if args.samples is None else args.samples
        args.out = args.out or "celeba_faces.png"
        return draw_real(args)
    if args.beside or args.images_dir:
        raise ConfigError("--beside and --images-dir need --celeba ROOT (they apply to real CelebA faces)")
    args.samples = 3 if args.samples is None else args.samples
    args.out = args.out or "synthetic_faces_grid.png"
    grid = draw_grid(args.size, args.samples, args.seed, args.scale)
    buf = io.BytesIO()
    grid.save(buf, format="PNG", optimize=True)
    path = atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {path} ({grid.width}x{grid.height}, 16 combinations x {args.samples} samples at {args.size} px)")
    return 0
