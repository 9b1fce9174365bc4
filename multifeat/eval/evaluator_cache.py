"""Where the judge comes from: evaluators trained once and kept in a cache folder.

:func:`cached_evaluator` (SyntheticFaces) and :func:`cached_celeba_evaluator` (a CelebA copy) load
the evaluator for a training configuration from ``<cache_dir>/<prefix>-S<size>-<hash>.ckpt``
(:func:`cached_evaluator_path`; the hash covers the configuration and
:data:`~multifeat.eval.evaluator.RECIPE_VERSION`), training and writing it first when the file is
missing. For SyntheticFaces at a size the package ships a judge for, :func:`cached_evaluator` returns
that shipped file instead (:mod:`multifeat.eval.shipped`) unless told to train.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from multifeat.eval.evaluator import (
    DEFAULT_ATTRIBUTES,
    DEFAULT_EVALUATOR_SEED,
    RECIPE_VERSION,
    AttributeEvaluator,
    default_cache_dir,
    load_evaluator,
    train_evaluator,
)
from multifeat.utils.files import atomic_write_bytes, ensure_writable_dir


def evaluator_cache_key(**config: Any) -> str:
    """Short stable hash of a training configuration (names the cached checkpoint)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_evaluator_path(prefix: str, config: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/<prefix>-S<size>-<hash of config and the recipe version>.ckpt`` (the cached evaluator's file)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = evaluator_cache_key(**config, version=RECIPE_VERSION)
    return folder / f"{prefix}-S{int(config['image_size'])}-{key}.ckpt"


def cached_evaluator(
    image_size: int,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    cache_dir: str | os.PathLike | None = None,
    seed: int = DEFAULT_EVALUATOR_SEED,
    max_steps: int = 400,
    num_samples: int = 4096,
    width: int = 16,
    max_width: int = 64,
    log=print,
    use_shipped: bool = True,
) -> tuple[AttributeEvaluator, Path]:
    """The SyntheticFaces judge for side ``image_size``.

    With ``use_shipped`` (default) and the default attributes, the package's shipped evaluator for that
    side (:func:`multifeat.eval.shipped.default_synthetic_evaluator`, hash-checked) when there is one;
    the training settings are then not used, and ``log`` says which file judges. Otherwise, or when
    none ships for that side (``log`` says so), the evaluator for this configuration from the cache,
    trained first if it is not there: ``<cache_dir>/evaluator-S<size>-<hash of the config>.ckpt``.
    """
    if use_shipped and tuple(attributes) == tuple(DEFAULT_ATTRIBUTES):
        from multifeat.eval.shipped import default_synthetic_evaluator, shipped_evaluator_path, shipped_sizes

        if shipped_evaluator_path(image_size) is not None:
            module, shipped, digest = default_synthetic_evaluator(image_size)
            if log:
                log(f"judge: the shipped SyntheticFaces evaluator {shipped.name} (sha256 {digest})")
            return module, shipped
        if log:
            log(f"note: no shipped SyntheticFaces evaluator for {image_size} px (shipped: "
                f"{', '.join(f'{s} px' for s in sorted(shipped_sizes())) or 'none'}); using a trained and cached one")
    cfg = {"image_size": int(image_size), "attributes": list(attributes), "seed": int(seed), "max_steps": int(max_steps),
           "num_samples": int(num_samples), "width": int(width), "max_width": int(max_width)}
    path = cached_evaluator_path("evaluator", cfg, cache_dir)
    if not path.is_file():
        ensure_writable_dir(path.parent)
        if log:
            log(f"training an attribute evaluator ({image_size}px, {max_steps} steps, SyntheticFaces seed {seed}) -> {path}")
        train_evaluator(image_size=image_size, attributes=attributes, max_steps=max_steps, seed=seed, out_path=path,
                        num_samples=num_samples, width=width, max_width=max_width, cache_dir=path.parent)
    return load_evaluator(path), path


#: How the CelebA judge is trained: the recipe of ``experiments/celeba_cpu/evaluator.yaml`` (robust views,
#: positives balanced per attribute, geometric views, mirroring, cosine learning rate; a test keeps the two equal),
#: so that `multifeat evaluate` and the pipeline judge real faces with the network the docs measure.
CELEBA_JUDGE_RECIPE: dict[str, Any] = {"norm": "batch", "dropout": 0.0, "lr": 0.002, "lr_cosine": True, "robust": True,
                                       "balance": True, "immature_fraction": 0.0, "geometric": 0.5,
                                       "geometric_scale": [0.8, 1.25], "geometric_shift": 0.1, "geometric_rotate": 10.0,
                                       "hflip": 0.5}


def cached_celeba_evaluator(
    root: str | os.PathLike,
    image_size: int,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    cache_dir: str | os.PathLike | None = None,
    max_steps: int = 2800,
    width: int = 16,
    max_width: int = 128,
    batch_size: int = 64,
    seed: int = DEFAULT_EVALUATOR_SEED,
    accelerator: str = "auto",
    log: Callable[[str], None] | None = print,
):
    """An :class:`AttributeEvaluator` trained on the CelebA copy under ``root`` (cached; trained on first use).

    The file is ``<cache_dir>/evaluator-celeba-S<size>-<hash>.ckpt``; the hash covers the absolute
    root, the size, the attributes and the training settings. The checkpoint records its data source
    (``multifeat.data_source``), which :func:`check_evaluator_matches` compares. Returns (evaluator, path).
    """
    import lightning as L

    from multifeat.eval.judge_celeba import EvaluatorDataModule

    root_abs = str(Path(root).expanduser().resolve())
    cfg = {"source": "celeba", "root": root_abs, "image_size": int(image_size), "attributes": list(attributes),
           "seed": int(seed), "max_steps": int(max_steps), "width": int(width), "max_width": int(max_width),
           "batch_size": int(batch_size), "recipe": CELEBA_JUDGE_RECIPE}
    path = cached_evaluator_path("evaluator-celeba", cfg, cache_dir)
    if not path.is_file():
        ensure_writable_dir(path.parent)
        if log:
            log(f"training a CelebA attribute evaluator ({image_size}px, {max_steps} steps, CelebA under {root_abs}) -> {path}")
        L.seed_everything(seed, workers=True, verbose=False)
        dm = EvaluatorDataModule(source="celeba", root=str(root), image_size=int(image_size), attributes=list(attributes),
                                 batch_size=batch_size, seed=seed, val_fraction=0.1)  # its positive rates feed `balance`
        model = AttributeEvaluator(image_size=int(image_size), attributes=list(attributes), width=width, max_width=max_width,
                                   **CELEBA_JUDGE_RECIPE)
        trainer = L.Trainer(max_steps=max_steps, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            default_root_dir=str(path.parent))
        trainer.fit(model, datamodule=dm)
        trainer.validate(model, datamodule=dm, verbose=False)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            trainer.save_checkpoint(tmp, weights_only=True)
            # record the data source where every multifeat checkpoint keeps its metadata
            from multifeat.io.checkpoints import load_checkpoint

            ckpt = load_checkpoint(tmp)  # weights-only read of the file written just above
            ckpt.setdefault("multifeat", {})["data_source"] = {"source": "celeba", "root": root_abs}
            buf = io.BytesIO()
            torch.save(ckpt, buf)
            atomic_write_bytes(path, buf.getvalue())
        finally:
            if tmp.exists():
                tmp.unlink()
    return load_evaluator(path), path


__all__ = [
    "cached_celeba_evaluator",
    "cached_evaluator",
    "cached_evaluator_path",
    "evaluator_cache_key",
]
