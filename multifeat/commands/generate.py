"""``multifeat generate``: sample images from any generator checkpoint the package writes.

Examples::

    multifeat generate --ckpt runs/demo/phase3/checkpoints/final.ckpt --n 64 --out grid.png
    multifeat generate --ckpt runs/demo/phase1/checkpoints/final.ckpt --n 16 --seed 3 --out g1.png --images-dir g1/
    multifeat generate --ckpt g3.ckpt --out grid.png --restore gpen --restore-weights GPEN-BFR-512.pth

Any package checkpoint whose module has ``sample(n, seed)`` works (Phase 1, Phase 3, ...): the module
is rebuilt with :func:`multifeat.io.checkpoints.load_phase_module` (weights-only, no code runs).
The same ``--seed`` gives the same images. ``--restore gpen`` passes the samples through the GPEN
face restorer (:mod:`multifeat.restore`, weights supplied by you); the grid then shows the restored
images and ``--images-dir`` receives both the raw and the restored files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from multifeat.errors import CheckpointError, ConfigError

DESCRIPTION = "Sample images (a PNG grid, optionally one PNG per image) from any multifeat generator checkpoint."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="multifeat generate", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", required=True, metavar="PATH", help="checkpoint of a generator phase (phase1, phase3, ...)")
    p.add_argument("--n", type=int, default=64, help="number of images")
    p.add_argument("--out", default="grid.png", metavar="PNG", help="grid image to write")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same images)")
    p.add_argument("--images-dir", metavar="DIR", help="also write every image as DIR/000000.png, ...")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row (default: square grid)")
    p.add_argument("--upscale", type=int, default=1, help="nearest-neighbour enlargement of the grid (small images)")
    p.add_argument("--batch-size", type=int, default=64, help="images generated at a time")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--restore", default="none", metavar="gpen|none", help="face restorer applied to the samples")
    p.add_argument("--restore-weights", metavar="PATH", help="weight file of the restorer (e.g. GPEN-BFR-512.pth)")
    return p


def load_generator(path: str, device: str = "cpu"):
    """The module of a package checkpoint, checked to have ``sample(n, seed)``."""
    from multifeat.io.checkpoints import load_phase_module

    module = load_phase_module(path, map_location="cpu")
    if not callable(getattr(module, "sample", None)):
        phase = getattr(module, "phase", type(module).__name__)
        raise CheckpointError(f"checkpoint '{path}' holds a {phase} module ({type(module).__name__}), which generates no images; "
                              "give a generator checkpoint (phase1, phase3, ...)")
    return module.to(device).eval()


def build_restorer(name: str, weights: str | None, device: str = "cpu"):
    """The restorer by name, imported lazily (``none`` needs nothing)."""
    if (name or "none").lower() in ("none", "identity"):
        return None
    try:
        from multifeat.restore import build_restorer as _build
    except ImportError as e:
        raise ConfigError(f"--restore {name}: face restoration is not available in this build ({e})") from e
    return _build(name, weights, device=device)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(size, n - start)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.upscale < 1:
        raise ConfigError(f"--upscale must be >= 1, got {args.upscale}")
    from multifeat.utils.files import ensure_writable_dir
    from multifeat.utils.images import save_grid, save_image

    restorer = build_restorer(args.restore, args.restore_weights, device=args.device)
    module = load_generator(args.ckpt, device=args.device)
    # One call with the seed gives the same images whatever --batch-size is.
    with torch.no_grad():
        images = module.sample(args.n, seed=args.seed).detach().float().cpu().clamp(-1, 1)
    restored = None
    if restorer is not None:
        with torch.no_grad():
            restored = torch.cat([restorer(images[s : s + k]).float().cpu() for s, k in _chunks(args.n, args.batch_size)])

    out = Path(args.out)
    ensure_writable_dir(out.parent if str(out.parent) else ".")
    save_grid(restored if restored is not None else images, out, nrow=args.nrow, upscale=args.upscale)
    written = [str(out)]
    if args.images_dir:
        d = ensure_writable_dir(args.images_dir)
        for i, img in enumerate(images):
            save_image(img, d / f"{i:06d}.png")
        if restored is not None:
            rd = ensure_writable_dir(d / "restored")
            for i, img in enumerate(restored):
                save_image(img, rd / f"{i:06d}.png")
        written.append(f"{d}/ ({args.n} images{' + restored/' if restored is not None else ''})")
    phase = getattr(module, "phase", type(module).__name__)
    print(f"generated {args.n} images from {phase} checkpoint {args.ckpt} (seed {args.seed}): " + ", ".join(written))
    return 0
