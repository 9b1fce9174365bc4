"""Immature-generator negatives: what a GAN draws before it has learned a face.

A generator trained only on beardless faces draws, in its first few hundred steps, a dark smeared
lower face that a judge trained on clean and synthetically degraded faces reads as a beard. Such a
sample is nevertheless certain evidence of one thing: **a generator whose whole training set lacks a
feature cannot be credited with that feature**. So the robust recipe of
:class:`multifeat.eval.evaluator.AttributeEvaluator` trains on samples of small DCGANs (the
project's :class:`~multifeat.nets.dcgan.DCGANGenerator` / ``DCGANDiscriminator`` with the LSGAN
losses of Phase 1) that were trained briefly on SyntheticFaces subsets lacking one feature, sampled
at several early steps. Each sample is a negative of the lacking feature; its other attributes are
unknown and masked out of the loss.

:func:`immature_bank` trains the generators (plain PyTorch, one intra-op thread, the global random
state untouched) and keeps the samples in a cache file named after a hash of the settings;
:func:`immature_batch` draws a masked training batch from it. The same ``seed`` and settings give the
same bank.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from multifeat.errors import ConfigError, DataError

#: version of the bank's recipe (generators, subsets, sampling); part of the cache file's name
IMMATURE_VERSION = 1

#: The generators' training subsets: (SyntheticFaces ``require`` filter, the feature none of its images has).
IMMATURE_SUBSETS: tuple[tuple[dict[str, bool], str], ...] = (
    ({"beard": False}, "beard"),
    ({"bald": True, "beard": False}, "beard"),
    ({"bald": False}, "bald"),
    ({"bald": False, "beard": True}, "bald"),
)

#: Batches after which each generator is sampled (its early, unrecognisable and half-formed faces).
IMMATURE_STEPS: tuple[int, ...] = (25, 50, 100, 150, 200, 300, 400)

#: Seed of the bank (the generators' weights, noise and training faces); away from the phases' seeds.
IMMATURE_SEED = 30_000

#: The largest side the generators are trained at; a larger evaluator gets the samples enlarged.
MAX_TRAIN_SIZE = 32


@dataclass
class ImmatureBank:
    """Samples of briefly trained generators: ``images`` uint8 ``[M, 3, S, S]``, ``lacks[i]`` the feature
    the generator of image ``i`` never saw, ``steps[i]`` the batch it was drawn after."""

    images: torch.Tensor
    lacks: list[str]
    steps: list[int]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def check_immature_steps(steps: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(s) for s in steps)
    if not out or any(s < 1 for s in out) or list(out) != sorted(set(out)):
        raise ConfigError(f"immature_steps must be increasing positive batch counts, got {list(steps)}")
    return out


def train_immature_generators(
    image_size: int = 32,
    seed: int = IMMATURE_SEED,
    steps: Sequence[int] = IMMATURE_STEPS,
    per_snapshot: int = 48,
    subsets: Sequence[tuple[dict[str, bool], str]] = IMMATURE_SUBSETS,
    batch_size: int = 32,
    num_faces: int = 1024,
    log: Callable[[str], None] | None = None,
) -> ImmatureBank:
    """Train one small LSGAN per subset and sample it after each of ``steps`` batches.

    Every generator is the demo's Phase-1 pair at side ``min(image_size, 32)``: G ``z_dim`` 64,
    width 16 (batch norm), D width 32 (no normalisation), channel cap 128, Adam 2e-4 (0.5, 0.999),
    batches of ``batch_size`` from ``num_faces`` SyntheticFaces that satisfy the subset's filter
    (seed ``seed + 1000 * i``), D updated on every batch and G after it on the same fakes.
    Samples are drawn in eval mode (batch-norm running statistics), as ``Phase1GAN.sample`` does,
    and enlarged bilinearly to ``image_size`` when it is larger. Runs on one intra-op thread and
    restores the caller's thread count and random state.
    """
    from multifeat.data import SyntheticFaces
    from multifeat.losses import lsgan_d_loss, lsgan_g_loss
    from multifeat.nets.dcgan import DCGANDiscriminator, DCGANGenerator

    steps = check_immature_steps(steps)
    if per_snapshot < 1:
        raise ConfigError(f"per_snapshot must be >= 1, got {per_snapshot}")
    train_size = min(int(image_size), MAX_TRAIN_SIZE)
    images, lacks, when = [], [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            for i, (require, lacking) in enumerate(subsets):
                s = int(seed) + 1000 * i
                torch.manual_seed(s)
                ds = SyntheticFaces(num_samples=int(num_faces), image_size=train_size, seed=s, require=dict(require))
                items = ds.__getitems__(list(range(len(ds))))
                faces = torch.stack([it["image"] for it in items])
                if any(bool(it["attrs"][list(ds.attribute_names).index(lacking)]) for it in items):
                    raise DataError(f"immature-generator subset {require} holds images with '{lacking}'")
                g = DCGANGenerator(z_dim=64, image_size=train_size, width=16, max_width=128, norm="batch")
                d = DCGANDiscriminator(image_size=train_size, width=32, max_width=128, norm="none")
                opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
                opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
                fixed = torch.randn(per_snapshot, 64, generator=torch.Generator().manual_seed(s + 1))
                order = torch.randperm(faces.shape[0])
                pos = 0
                for step in range(1, steps[-1] + 1):
                    if pos + batch_size > order.numel():
                        order, pos = torch.randperm(faces.shape[0]), 0
                    x = faces[order[pos : pos + batch_size]]
                    pos += batch_size
                    fake = g(torch.randn(x.shape[0], 64))
                    loss_d = lsgan_d_loss(d(x), d(fake.detach()))
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    opt_d.step()
                    loss_g = lsgan_g_loss(d(fake))
                    opt_g.zero_grad(set_to_none=True)
                    loss_g.backward()
                    opt_g.step()
                    if step in steps:
                        g.eval()
                        with torch.no_grad():
                            out = g(fixed).float().clamp(-1, 1)
                        g.train()
                        images.append(out)
                        lacks += [lacking] * per_snapshot
                        when += [step] * per_snapshot
                if log:
                    log(f"immature generator {i + 1}/{len(subsets)} ({require}, never '{lacking}'): sampled after {list(steps)} batches")
    finally:
        torch.set_num_threads(threads)
    x = torch.cat(images)
    if x.shape[-1] != image_size:
        x = F.interpolate(x, size=(int(image_size),) * 2, mode="bilinear", align_corners=False)
    u8 = x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return ImmatureBank(u8, lacks, when)


def immature_bank(
    image_size: int,
    seed: int = IMMATURE_SEED,
    steps: Sequence[int] = IMMATURE_STEPS,
    per_snapshot: int = 48,
    cache_dir: str | os.PathLike = ".",
    log: Callable[[str], None] | None = print,
) -> ImmatureBank:
    """The bank for these settings from ``<cache_dir>/immature-S<size>-<hash>.pt``, trained and written
    (atomically) first when the file is missing (the evaluator passes its own cache folder)."""
    from multifeat.utils.files import atomic_write_bytes, ensure_writable_dir

    steps = check_immature_steps(steps)
    cfg = {"image_size": int(image_size), "seed": int(seed), "steps": list(steps), "per_snapshot": int(per_snapshot),
           "subsets": [[sorted(r.items()), f] for r, f in IMMATURE_SUBSETS], "version": IMMATURE_VERSION}
    key = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"immature-S{int(image_size)}-{key}.pt"
    if path.is_file():
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            return ImmatureBank(data["images"], list(data["lacks"]), [int(s) for s in data["steps"]])
        except Exception as e:  # a damaged cache file is rebuilt, and said so
            if log:
                log(f"immature-generator bank '{path}' cannot be read ({type(e).__name__}); training it again")
    if log:
        log(f"training {len(IMMATURE_SUBSETS)} small generators for the immature-generator negatives "
            f"({int(image_size)} px, up to {steps[-1]} batches each) -> {path}")
    bank = train_immature_generators(image_size, seed, steps, per_snapshot, log=log)
    ensure_writable_dir(path.parent)
    buf = io.BytesIO()
    torch.save({"images": bank.images, "lacks": bank.lacks, "steps": bank.steps, "config": json.dumps(cfg)}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return bank


def immature_batch(
    bank: ImmatureBank,
    n: int,
    attributes: Sequence[str],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` samples drawn from ``bank`` (with replacement): ``(images [n,3,S,S] in [-1, 1], targets [n, A],
    mask [n, A])``. Targets are all 0; the mask is 1 only in the column of the feature the image's
    generator never saw (a bank feature the evaluator does not predict gives an all-zero mask row)."""
    attributes = list(attributes)
    n = int(n)
    if n <= 0 or len(bank) == 0:
        size = int(bank.images.shape[-1]) if bank.images.ndim == 4 else 0
        return torch.zeros(0, 3, size, size), torch.zeros(0, len(attributes)), torch.zeros(0, len(attributes))
    idx = torch.randint(0, len(bank), (n,), generator=generator)
    x = bank.images[idx].float().div(127.5).sub(1)
    mask = torch.zeros(n, len(attributes))
    for row, i in enumerate(idx.tolist()):
        lacking = bank.lacks[i]
        if lacking in attributes:
            mask[row, attributes.index(lacking)] = 1.0
    return x, torch.zeros(n, len(attributes)), mask


__all__ = [
    "IMMATURE_SEED",
    "IMMATURE_STEPS",
    "IMMATURE_SUBSETS",
    "IMMATURE_VERSION",
    "ImmatureBank",
    "check_immature_steps",
    "immature_bank",
    "immature_batch",
    "train_immature_generators",
]
