"""Immature-generator negatives: what a GAN draws before it has learned a face.

A generator trained only on beardless faces draws, in its first few hundred steps, a dark smeared
lower face that a judge trained on clean and synthetically degraded faces reads as a beard; later, at
the demo's phase-1 length, it draws blurred faces under a checkerboard whose not-yet-formed lower face
is read the same way. Such a sample is nevertheless certain evidence of one thing: **a generator whose
whole training set lacks a feature cannot be credited with that feature**. So the robust recipe of
:class:`multifeat.eval.evaluator.AttributeEvaluator` trains on samples of small DCGANs (the project's
:class:`~multifeat.nets.dcgan.DCGANGenerator` / ``DCGANDiscriminator`` with the LSGAN losses of
Phase 1) trained on SyntheticFaces subsets that lack one feature (:data:`IMMATURE_GENERATORS`),
sampled at several steps up to the demo's phase-1 length, from the live generator and from an EMA of
it. Each sample is a negative of the lacking feature; its other attributes are unknown and masked
out of the loss.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from multifeat.errors import ConfigError, DataError

#: version of the bank's recipe (generators, subsets, sampling); part of the cache file's name.
#: 1: four generators (D width 32) sampled up to 400 batches; 2: :data:`IMMATURE_GENERATORS`.
IMMATURE_VERSION = 2


@dataclass(frozen=True)
class ImmatureGenerator:
    """One generator of the bank: trained on the SyntheticFaces that satisfy ``require`` (none of
    them has ``lacks``), with a discriminator of width ``d_width`` (no normalisation), sampled after
    each bank step up to ``max_step``; with ``ema`` also from an EMA of G (decay ``EMA_DECAY`` per
    batch, ramped up with ``EMA_RAMPUP`` as Phase1GAN's ``ema_rampup`` does)."""

    require: tuple[tuple[str, bool], ...]
    lacks: str
    d_width: int = 32
    max_step: int = 1000
    ema: bool = True
    num_faces: int = 2048


_BALD_NO_BEARD = (("bald", True), ("beard", False))

#: The bank's generators, in training order; generator ``i`` uses seed ``seed + 1000 * i``.
#: Three copies of the demo's phase 1 (bald, beardless faces; two with the demo's D width 32, one
#: with a narrower D of width 16), sampled up to 1000 batches (the demo's phase 1 is 1024), and
#: three shorter ones on other subsets, which give the negatives of ``bald`` and of a beard on faces
#: with hair.
IMMATURE_GENERATORS: tuple[ImmatureGenerator, ...] = (
    ImmatureGenerator(_BALD_NO_BEARD, "beard", d_width=32),
    ImmatureGenerator(_BALD_NO_BEARD, "beard", d_width=32),
    ImmatureGenerator(_BALD_NO_BEARD, "beard", d_width=16),
    ImmatureGenerator((("beard", False),), "beard", max_step=400, num_faces=1024),
    ImmatureGenerator((("bald", False),), "bald", max_step=400, num_faces=1024),
    ImmatureGenerator((("bald", False), ("beard", True)), "bald", max_step=400, num_faces=1024),
)

#: Batches after which each generator is sampled (those up to its ``max_step``): its early,
#: unrecognisable samples and its half-formed faces.
IMMATURE_STEPS: tuple[int, ...] = (25, 50, 100, 150, 200, 300, 400, 500, 600, 800, 1000)

#: EMA of the bank's generators: decay per batch and ramp-up (the half-life of ``EMA_DECAY``, in
#: images, is capped at ``EMA_RAMPUP`` times the images seen so far; StyleGAN2-ADA's ramp-up).
EMA_DECAY = 0.99
EMA_RAMPUP = 0.05

#: Seed of the bank (the generators' weights, noise and training faces); away from the seeds of the
#: phases (0, 1, ...), the judge (10 000), the real reference (20 000), the held-out faces (31 337
#: is not one of ``seed + 1000 * i`` or ``+ 1``) and the probe G1 (7).
IMMATURE_SEED = 30_000

#: The largest side the generators are trained at; a larger evaluator gets the samples enlarged.
MAX_TRAIN_SIZE = 32

#: Samples per generator per snapshot (live G and EMA each).
PER_SNAPSHOT = 32


@dataclass
class ImmatureBank:
    """Samples of briefly trained generators: ``images`` uint8 ``[M, 3, S, S]``, ``lacks[i]`` the feature
    the generator of image ``i`` never saw, ``steps[i]`` the batch it was drawn after, ``sources[i]``
    which network drew it (``"g<k>"``: the live generator ``k`` of the bank, ``"g<k>-ema"``: its EMA)."""

    images: torch.Tensor
    lacks: list[str]
    steps: list[int]
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def check_immature_steps(steps: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(s) for s in steps)
    if not out or any(s < 1 for s in out) or list(out) != sorted(set(out)):
        raise ConfigError(f"immature_steps must be increasing positive batch counts, got {list(steps)}")
    return out


def generator_steps(spec: ImmatureGenerator, steps: Sequence[int]) -> tuple[int, ...]:
    """The snapshots of ``spec``: the bank steps up to its ``max_step`` (at least the first one)."""
    steps = check_immature_steps(steps)
    return tuple(s for s in steps if s <= spec.max_step) or steps[:1]


def build_pair(spec: ImmatureGenerator, image_size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(G, D) of one bank generator at side ``image_size``: the demo's Phase-1 networks (G z 64, width
    16, batch norm; D of the spec's width, no normalisation; channel cap 128)."""
    from multifeat.nets.dcgan import DCGANDiscriminator, DCGANGenerator

    g = DCGANGenerator(z_dim=64, image_size=int(image_size), width=16, max_width=128, norm="batch")
    d = DCGANDiscriminator(image_size=int(image_size), width=int(spec.d_width), max_width=128, norm="none")
    return g, d


def _ema_update(ema: torch.nn.Module, g: torch.nn.Module, images_before: int, batch: int) -> None:
    """One EMA step after a G update (:func:`multifeat.nets.ema.ema_rampup_decay`; buffers copied)."""
    from multifeat.nets.ema import ema_rampup_decay

    beta = ema_rampup_decay(EMA_DECAY, EMA_RAMPUP, images_before, batch)
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), g.parameters()):
            pe.copy_(p.detach().lerp(pe, beta))
        for be, b in zip(ema.buffers(), g.buffers()):
            be.copy_(b)


def train_immature_generators(
    image_size: int = 32,
    seed: int = IMMATURE_SEED,
    steps: Sequence[int] = IMMATURE_STEPS,
    per_snapshot: int = PER_SNAPSHOT,
    generators: Sequence[ImmatureGenerator] = IMMATURE_GENERATORS,
    batch_size: int = 32,
    num_faces: int | None = None,
    log: Callable[[str], None] | None = None,
) -> ImmatureBank:
    """Train each generator of ``generators`` and sample it after each of its steps.

    Every generator is the demo's Phase-1 pair at side ``min(image_size, 32)``: G ``z_dim`` 64,
    width 16 (batch norm), D of the spec's width (no normalisation), channel cap 128, Adam 2e-4
    (0.5, 0.999), batches of ``batch_size`` from the spec's ``num_faces`` (or ``num_faces``; at most
    the faces its last snapshot's batches hold) SyntheticFaces that satisfy its filter (seed ``seed + 1000 * i``), D updated on every batch and G
    after it on the same fakes, then the EMA (when the spec keeps one). Samples (``per_snapshot`` of
    fixed noise from each network) are drawn in eval mode (batch-norm running statistics), as
    ``Phase1GAN.sample`` does, and enlarged bilinearly to ``image_size`` when it is larger. Runs on
    one intra-op thread and restores the caller's thread count and random state.
    """
    import copy

    from multifeat.data import SyntheticFaces
    from multifeat.losses import lsgan_d_loss, lsgan_g_loss

    steps = check_immature_steps(steps)
    if per_snapshot < 1:
        raise ConfigError(f"per_snapshot must be >= 1, got {per_snapshot}")
    train_size = min(int(image_size), MAX_TRAIN_SIZE)
    images, lacks, when, sources = [], [], [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            for i, spec in enumerate(generators):
                s = int(seed) + 1000 * i
                torch.manual_seed(s)
                mine = generator_steps(spec, steps)
                # a generator trained for k batches sees at most k * batch_size faces: render no more
                n_faces = min(int(num_faces if num_faces is not None else spec.num_faces), mine[-1] * int(batch_size))
                ds = SyntheticFaces(num_samples=n_faces, image_size=train_size, seed=s, require=dict(spec.require))
                items = ds.__getitems__(list(range(len(ds))))
                faces = torch.stack([it["image"] for it in items])
                if any(bool(it["attrs"][list(ds.attribute_names).index(spec.lacks)]) for it in items):
                    raise DataError(f"immature-generator subset {dict(spec.require)} holds images with '{spec.lacks}'")
                g, d = build_pair(spec, train_size)
                ema = copy.deepcopy(g).requires_grad_(False) if spec.ema else None
                opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
                opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
                fixed = torch.randn(per_snapshot, 64, generator=torch.Generator().manual_seed(s + 1))
                order = torch.randperm(faces.shape[0])
                pos = 0
                for step in range(1, mine[-1] + 1):
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
                    if ema is not None:
                        _ema_update(ema, g, (step - 1) * x.shape[0], x.shape[0])
                    if step in mine:
                        for net, name in ((g, f"g{i}"), (ema, f"g{i}-ema")):
                            if net is None:
                                continue
                            net.eval()
                            with torch.no_grad():
                                images.append(net(fixed).float().clamp(-1, 1))
                            net.train()
                            lacks += [spec.lacks] * per_snapshot
                            when += [step] * per_snapshot
                            sources += [name] * per_snapshot
                if log:
                    log(f"immature generator {i + 1}/{len(generators)} ({dict(spec.require)}, D width {spec.d_width}, "
                        f"never '{spec.lacks}'): sampled after {list(mine)} batches")
    finally:
        torch.set_num_threads(threads)
    x = torch.cat(images)
    if x.shape[-1] != image_size:
        x = F.interpolate(x, size=(int(image_size),) * 2, mode="bilinear", align_corners=False)
    u8 = x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return ImmatureBank(u8, lacks, when, sources)


def bank_config(image_size: int, seed: int, steps: Sequence[int], per_snapshot: int,
                generators: Sequence[ImmatureGenerator] = IMMATURE_GENERATORS) -> dict:
    """Everything the bank depends on (its cache key)."""
    return {"image_size": int(image_size), "seed": int(seed), "steps": list(check_immature_steps(steps)),
            "per_snapshot": int(per_snapshot), "generators": [asdict(g) for g in generators],
            "ema": [EMA_DECAY, EMA_RAMPUP], "version": IMMATURE_VERSION}


def immature_bank(
    image_size: int,
    seed: int = IMMATURE_SEED,
    steps: Sequence[int] = IMMATURE_STEPS,
    per_snapshot: int = PER_SNAPSHOT,
    cache_dir: str | os.PathLike = ".",
    log: Callable[[str], None] | None = print,
    generators: Sequence[ImmatureGenerator] = IMMATURE_GENERATORS,
    num_faces: int | None = None,
) -> ImmatureBank:
    """The bank for these settings from ``<cache_dir>/immature-S<size>-<hash>.pt``, trained and written
    (atomically) first when the file is missing (the evaluator passes its own cache folder)."""
    import time

    from multifeat.utils.files import atomic_write_bytes, ensure_writable_dir

    steps = check_immature_steps(steps)
    cfg = bank_config(image_size, seed, steps, per_snapshot, generators)
    if num_faces is not None:
        cfg["num_faces"] = int(num_faces)
    key = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"immature-S{int(image_size)}-{key}.pt"
    if path.is_file():
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            return ImmatureBank(data["images"], list(data["lacks"]), [int(s) for s in data["steps"]], list(data["sources"]))
        except Exception as e:  # a damaged cache file is rebuilt, and said so
            if log:
                log(f"immature-generator bank '{path}' cannot be read ({type(e).__name__}); training it again")
    if log:
        log(f"training {len(generators)} small generators for the immature-generator negatives "
            f"({int(image_size)} px, up to {steps[-1]} batches each) -> {path}")
    t0 = time.perf_counter()
    bank = train_immature_generators(image_size, seed, steps, per_snapshot, generators=generators, num_faces=num_faces, log=log)
    if log:
        log(f"immature-generator bank: {len(bank)} images in {time.perf_counter() - t0:.0f} s")
    ensure_writable_dir(path.parent)
    buf = io.BytesIO()
    torch.save({"images": bank.images, "lacks": bank.lacks, "steps": bank.steps, "sources": bank.sources,
                "config": json.dumps(cfg)}, buf)
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
    "EMA_DECAY",
    "EMA_RAMPUP",
    "IMMATURE_GENERATORS",
    "IMMATURE_VERSION",
    "PER_SNAPSHOT",
    "ImmatureBank",
    "ImmatureGenerator",
    "bank_config",
    "build_pair",
    "check_immature_steps",
    "generator_steps",
    "immature_bank",
    "immature_batch",
    "train_immature_generators",
]
