"""The judges that ship with the package: fixed SyntheticFaces evaluators named by their hash.

Training an evaluator depends on the machine (thread count, floating-point order) and on its
settings, so two machines that each train their own judge score the same images differently. The
package therefore ships the weights of its SyntheticFaces evaluator:
``multifeat/eval/weights/synthetic<S>-<first 16 hex digits of the file's SHA-256>.pt`` (weights-only,
:func:`multifeat.eval.evaluator.save_evaluator_weights`). :func:`default_synthetic_evaluator` loads
the file for a side S after checking that its content matches the hash in its name; ``multifeat
evaluate``, the pipeline's evaluation and the benchmark judge SyntheticFaces images with it unless
told otherwise.

The files are made by one command, which prints the path and the hash::

    python -m multifeat.eval.shipped --size 32 --out multifeat/eval/weights

It trains with :func:`multifeat.eval.evaluator.train_evaluator` (the robust recipe with
immature-generator negatives from the bank of :mod:`multifeat.eval.immature`, :data:`SHIPPED_SETTINGS`)
on one torch thread.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import torch

from multifeat.errors import CheckpointError, ConfigError
from multifeat.eval.evaluator import (
    DEFAULT_ATTRIBUTES,
    DEFAULT_EVALUATOR_SEED,
    AttributeEvaluator,
    load_evaluator,
)
from multifeat.utils.files import file_sha256

#: The folder of the shipped weight files (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: How the shipped SyntheticFaces evaluators are trained (besides the image size). ``immature_fraction``:
#: immature-generator samples appended per batch, as a fraction of its size (the trained default is 0.25).
SHIPPED_SETTINGS: dict[str, object] = {"max_steps": 600, "num_samples": 4096, "batch_size": 64, "width": 16, "max_width": 64,
                                       "seed": DEFAULT_EVALUATOR_SEED, "immature_fraction": 1.0}

_NAME = re.compile(r"^synthetic(\d+)-([0-9a-f]{16})\.pt$")




def shipped_sizes(folder: str | os.PathLike = WEIGHTS_DIR) -> dict[int, Path]:
    """``{side: file}`` of the shipped SyntheticFaces evaluators in ``folder``."""
    out: dict[int, Path] = {}
    folder = Path(folder)
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        m = _NAME.match(p.name)
        if m:
            size = int(m.group(1))
            if size in out:
                raise CheckpointError(f"two shipped evaluators for {size} px in '{folder}': {out[size].name} and {p.name}")
            out[size] = p
    return out


def shipped_evaluator_path(image_size: int, folder: str | os.PathLike = WEIGHTS_DIR) -> Path | None:
    """The shipped file for side ``image_size`` (None when the package ships none for that size)."""
    return shipped_sizes(folder).get(int(image_size))


def verify_shipped_file(path: str | os.PathLike) -> str:
    """Check that the file's SHA-256 starts with the 16 hex digits of its name; returns the full hash.
    Raises :class:`CheckpointError` naming the file and both hashes otherwise."""
    p = Path(path)
    m = _NAME.match(p.name)
    if not m:
        raise CheckpointError(f"'{p}' is not named like a shipped evaluator (synthetic<size>-<16 hex digits>.pt)")
    digest = file_sha256(p)
    if not digest.startswith(m.group(2)):
        raise CheckpointError(f"shipped evaluator '{p}' is damaged or was replaced: its SHA-256 is {digest[:16]}..., "
                              f"its name says {m.group(2)}")
    return digest


def default_synthetic_evaluator(image_size: int, folder: str | os.PathLike = WEIGHTS_DIR) -> tuple[AttributeEvaluator, Path, str]:
    """``(evaluator, path, sha256[:16])``: the shipped SyntheticFaces judge for side ``image_size``,
    checked against the hash in its name. ConfigError when the package ships none for that size."""
    path = shipped_evaluator_path(image_size, folder)
    if path is None:
        sizes = sorted(shipped_sizes(folder))
        raise ConfigError(f"no shipped SyntheticFaces evaluator for {image_size} px in '{folder}' (shipped sizes: "
                          f"{', '.join(map(str, sizes)) or 'none'}); train one (multifeat evaluate trains and caches it) "
                          f"or build it with `python -m multifeat.eval.shipped --size {image_size} --out {folder}`")
    digest = verify_shipped_file(path)
    return load_evaluator(path), path, digest[:16]


def build_shipped_evaluator(image_size: int, out_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                            log=print) -> tuple[Path, str]:
    """Train the SyntheticFaces evaluator for side ``image_size`` with :data:`SHIPPED_SETTINGS` on one
    torch thread and write it as ``<out_dir>/synthetic<S>-<hash>.pt`` (replacing an older file of that
    size there). Returns (path, full SHA-256)."""
    from multifeat.eval.evaluator import save_evaluator_weights, train_evaluator
    from multifeat.utils.files import atomic_write_bytes, ensure_writable_dir

    out = ensure_writable_dir(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = train_evaluator(image_size=int(image_size), attributes=DEFAULT_ATTRIBUTES, out_path=Path(tmp) / "ev.ckpt",
                                   accelerator="cpu", cache_dir=cache_dir, **SHIPPED_SETTINGS)
            module = load_evaluator(ckpt)
            staged = Path(tmp) / "weights.pt"
            digest = save_evaluator_weights(module, staged)
            final = out / f"synthetic{int(image_size)}-{digest[:16]}.pt"
            old = shipped_sizes(out).get(int(image_size))
            atomic_write_bytes(final, staged.read_bytes())
            if old is not None and old != final:
                old.unlink()
    finally:
        torch.set_num_threads(threads)
    if log:
        log(f"{final}  sha256 {digest}")
        log("validation accuracy: " + ", ".join(f"{a} {100 * v:.1f}%" for a, v in module.val_accuracy.items()))
    return final, digest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m multifeat.eval.shipped",
                                description="Train the shipped SyntheticFaces evaluator and print its file and SHA-256.")
    p.add_argument("--size", type=int, nargs="+", default=[32], help="image sides (default 32)")
    p.add_argument("--out", default=str(WEIGHTS_DIR), help="output folder (default: the package's weights folder)")
    p.add_argument("--cache-dir", default=None, help="cache of the immature-generator bank (default: the evaluators' cache)")
    args = p.parse_args(argv)
    for size in args.size:
        build_shipped_evaluator(size, args.out, cache_dir=args.cache_dir)
    return 0


__all__ = [
    "SHIPPED_SETTINGS",
    "WEIGHTS_DIR",
    "build_shipped_evaluator",
    "default_synthetic_evaluator",
    "file_sha256",
    "shipped_evaluator_path",
    "shipped_sizes",
    "verify_shipped_file",
]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
