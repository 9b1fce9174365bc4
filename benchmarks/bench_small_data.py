"""Phase-1 speed on scarce real data: short epochs against long ones, real JPEGs against synthetic faces.

    python benchmarks/bench_small_data.py                        # a generated CelebA-like tree
    python benchmarks/bench_small_data.py --root data/celebahq64 # a real CelebA copy (official layout)
    python benchmarks/bench_small_data.py --quick | --smoke

Two CelebA-layout trees are made under a temporary folder from the same images (links to the files
of ``--root``, or synthetic faces written as JPEG quality 92 when no root is given): a **short** one
of ``3 x batch`` images (3 batches per epoch, like the 246 bald faces of a partial CelebA copy) and a
**long** one of ``--long-batches x batch`` images. Phase 1 (``Phase1GAN`` through ``lightning.Trainer``,
no validation) trains on each with ``AttributeDataModule(source="celeba")``:

1. short vs long epochs with the decoded-image memory cache (the default, ``cache_mb``), and the same
   without it (``cache_mb: 0``, ``num_workers`` decoding every epoch). Target: short / long >= 0.9.
2. real data (cached) against ``SyntheticFaces`` with ``cache: true``, same sizes: target >= 0.9; and
   the data's share of a step (median time to fetch one batch from the cached loader / step time).

Rates are training batches per second between batch ``warmup`` and the last one, epoch boundaries
included, median over ``--repeats`` interleaved runs; each batch is one D1 and one G1 update. Wall
seconds are shown for every run; the verdicts of cached runs use CPU seconds of this process (they
run entirely in it, so a busy machine does not blur them), the uncached ones only have wall time. Networks are small (``--width``) so that fixed costs show as they would next to a GPU step.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

try:
    from benchmarks import _common as C
except ImportError:  # run as a script
    import _common as C

TARGET = 0.9


#: label columns of the written trees: enough for the package's derived names (all -1: no filter is used)
LABEL_COLUMNS = ("Bald", "No_Beard", "Goatee", "Mustache", "Eyeglasses", "Smiling")


def write_tree(dst: Path, images: list[Path] | None, n: int, size: int, seed: int = 0) -> Path:
    """A CelebA-layout tree of ``n`` images under ``dst``: links to ``images`` or synthetic JPEGs."""
    import numpy as np
    from PIL import Image

    img_dir = dst / "celeba" / "img_align_celeba"
    img_dir.mkdir(parents=True)
    names = []
    if images is not None:
        for src in images[:n]:
            os.symlink(src.resolve(), img_dir / src.name)
            names.append(src.name)
    else:
        from multifeat.data import SyntheticFaces

        ds = SyntheticFaces(num_samples=n, image_size=size, seed=seed)
        for start in range(0, n, 64):
            batch = ds.__getitems__(list(range(start, min(n, start + 64))))
            for it in batch:
                arr = ((it["image"].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
                name = f"{it['index'] + 1:06d}.jpg"
                Image.fromarray(arr).save(img_dir / name, quality=92)
                names.append(name)
    cols = LABEL_COLUMNS
    rows = [f"{name} " + " ".join("-1" for _ in cols) for name in names]
    (dst / "celeba" / "list_attr_celeba.txt").write_text("\n".join([str(len(names)), " ".join(cols), *rows]) + "\n")
    return dst


def real_images(root: Path, n: int) -> list[Path]:
    from multifeat.data.celeba import IMAGE_DIR, celeba_dir

    base = celeba_dir(root)
    files = sorted(p for p in (base / IMAGE_DIR).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(files) < n:
        raise SystemExit(f"'{base / IMAGE_DIR}' holds {len(files)} images; this run needs {n} (lower --long-batches)")
    return files[:n]


class BatchClock:
    """A callback that records the wall time at the end of every training batch."""

    def __new__(cls):
        from lightning.pytorch import Callback

        class _Clock(Callback):
            def __init__(self):
                self.times: list[float] = []
                self.cpu: list[float] = []

            def on_train_batch_end(self, *args, **kwargs):
                self.times.append(time.perf_counter())
                self.cpu.append(time.process_time())

        return _Clock()


def fit_rate(dm, cfg: dict, batches: int, warmup: int) -> tuple[float, float]:
    """Training batches per (wall second, CPU second of this process) of a Phase-1 fit on ``dm``, between
    batch ``warmup`` and the last."""
    import lightning as L

    from multifeat.phases import Phase1GAN

    clock = BatchClock()
    L.seed_everything(0, verbose=False)
    model = Phase1GAN(image_size=cfg["size"], z_dim=cfg["z_dim"], g_width=cfg["width"], d_width=cfg["width"],
                      max_width=cfg["max_width"], num_fixed=4)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2 * batches, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[clock], num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    t = clock.times
    if len(t) < warmup + 2:
        raise RuntimeError(f"only {len(t)} batches ran; expected {batches}")
    c = clock.cpu
    return (len(t) - 1 - warmup) / (t[-1] - t[warmup]), (len(c) - 1 - warmup) / max(c[-1] - c[warmup], 1e-9)


def fetch_ms(dm, batches: int) -> float:
    """Median CPU ms (this process) to fetch one batch from the data module's train loader (after one
    full pass; the cached loaders run in this process)."""
    loader = dm.train_dataloader()
    for _ in loader:  # fills any cache
        pass
    times: list[float] = []
    while len(times) < batches:
        times += C.fetch_times(loader, batches - len(times))
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="a CelebA copy (folder holding celeba/ or img_align_celeba/); "
                                                 "default: synthetic faces written as JPEGs")
    p.add_argument("--size", type=int, default=None, help="image side (default 64; --smoke 32)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 64; --smoke 8)")
    p.add_argument("--width", type=int, default=8, help="G1/D1 base width (default 8: a small, fast step)")
    p.add_argument("--long-batches", type=int, default=None, help="batches per epoch of the long set (default 40)")
    p.add_argument("--workers", type=int, default=2, help="num_workers of the uncached runs (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3, --quick 2, --smoke 1)")
    args = p.parse_args(argv)
    C.setup_threads(args.threads)
    C.quiet_lightning()
    smoke, quick = args.smoke, args.quick
    size = args.size or (32 if smoke else 64)
    batch = args.batch or (8 if smoke else 64)
    long_batches = args.long_batches or (6 if smoke else 40)
    repeats = args.repeats or (1 if smoke else 2 if quick else 3)
    batches = 12 if smoke else (45 if quick else 90)
    warmup = 3 if smoke else 6
    cfg = dict(size=size, z_dim=32 if smoke else 64, width=args.width, max_width=8 * args.width)

    from multifeat.data import AttributeDataModule

    n_short, n_long = 3 * batch, long_batches * batch
    rows: list[list] = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp = Path(tmp)
        images = real_images(Path(args.root), n_long) if args.root else None
        t0 = time.perf_counter()
        short = write_tree(tmp / "short", images, n_short, size)
        long = write_tree(tmp / "long", images, n_long, size)
        t_write = time.perf_counter() - t0

        def celeba(root: Path, cache: bool):
            return AttributeDataModule(source="celeba", root=str(root), image_size=size, batch_size=batch, val_fraction=0.0,
                                       num_workers=0 if cache else args.workers, cache_mb=1024 if cache else 0, seed=0)

        def synthetic():
            dm = AttributeDataModule(source="synthetic", image_size=size, batch_size=batch, num_samples=n_long,
                                     val_fraction=0.0, synthetic={"cache": True}, seed=0)
            for _ in dm.train_dataloader():  # render once: the fit then reads the warm cache, like the real runs
                pass
            return dm

        variants = {
            "short, cached": lambda: celeba(short, True),
            "long, cached": lambda: celeba(long, True),
            "short, not cached": lambda: celeba(short, False),
            "long, not cached": lambda: celeba(long, False),
            "synthetic (cache), long": synthetic,
        }
        rates: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
        for _ in range(repeats):  # interleaved, so load changes hit every variant alike
            for name, make in variants.items():
                rates[name].append(fit_rate(make(), cfg, batches, warmup))
        wall = {k: statistics.median(r[0] for r in v) for k, v in rates.items()}
        rate = {k: statistics.median(r[1] for r in v) for k, v in rates.items()}
        fetch = {"real": fetch_ms(celeba(long, True), 8 if smoke else 30),
                 "synthetic": fetch_ms(synthetic(), 8 if smoke else 30)}

    source = f"'{args.root}' (links)" if args.root else "synthetic faces written as JPEG (quality 92)"
    C.print_header("Phase 1 on scarce data: short epochs, decoded-image cache", notes=[
        f"images: {source}; {size} px; batch {batch}; short set {n_short} images (3 batches/epoch), long set {n_long} "
        f"({long_batches} batches/epoch); trees written in {t_write:.1f} s",
        f"Phase1GAN widths {cfg['width']}..{cfg['max_width']}, z {cfg['z_dim']}; {batches} batches per fit, rate from batch "
        f"{warmup}; median of {repeats} interleaved repeats; uncached runs use num_workers={args.workers}",
    ])
    step_ms = {k: 1e3 / v for k, v in rate.items()}
    for name in variants:
        cpu = "n/a (decoding in workers)" if "not cached" in name else rate[name]
        rows.append([name, wall[name], 1e3 / wall[name], cpu])
    print(C.markdown_table(["variant", "batches/wall s", "wall ms/batch", "batches/CPU s"], rows, digits=2))
    print()
    # cached variants run entirely in this process: their CPU-second rates measure the code, not the
    # neighbours; the uncached ones decode in worker processes, so only wall time covers them
    r_cached = rate["short, cached"] / rate["long, cached"]
    r_plain = wall["short, not cached"] / wall["long, not cached"]
    r_real = rate["long, cached"] / rate["synthetic (cache), long"]
    verdict = lambda r: "PASS" if r >= TARGET else "FAIL"  # noqa: E731
    share_real = fetch["real"] / step_ms["long, cached"]
    share_syn = fetch["synthetic"] / step_ms["synthetic (cache), long"]
    print(C.markdown_table(["comparison", "ratio", "verdict"], [
        ["short / long epochs, cached (CPU s)", r_cached, verdict(r_cached)],
        ["short / long epochs, not cached (wall s)", r_plain, verdict(r_plain)],
        ["real (cached) / synthetic (cached) (CPU s)", r_real, verdict(r_real)],
    ], digits=3))
    print()
    print(C.markdown_table(["data", "fetch ms/batch", "step ms", "data share"], [
        ["real JPEG, cached", fetch["real"], step_ms["long, cached"], f"{100 * share_real:.1f}%"],
        ["synthetic, cached", fetch["synthetic"], step_ms["synthetic (cache), long"], f"{100 * share_syn:.1f}%"],
    ], digits=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
