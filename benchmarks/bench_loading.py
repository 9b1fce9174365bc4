"""Image-folder loading rate and the data-loading share of a Phase-1 step.

    python benchmarks/bench_loading.py            # 512 files per format, 32 and 64 px
    python benchmarks/bench_loading.py --quick    # 256 files
    python benchmarks/bench_loading.py --smoke    # 32 files (test suite)

1. The script renders synthetic faces at 128 px, writes them to a temporary folder as PNG and as JPEG
   (quality 95), and reads them back with ``multifeat.data.ImageFolderDataset`` through a
   ``DataLoader`` (batch 64, ``num_workers=0``: decode, centre crop, Lanczos resize, [-1, 1]) at the
   target sizes. Setup (header scan) and loading rates are reported apart.
2. Data-loading share at the defaults of ``experiments/phase1.yaml`` (``AttributeDataModule``:
   synthetic bald faces, 32 px, 2048 samples, batch 64, ``num_workers=0``; the same DataModule with
   ``source=folder`` on the PNG folder): time to fetch one batch / (fetch + one Phase-1 training step
   with the config's networks), in the second epoch (the first is shown too: a cache fills there).
   Target < 5 %.

Times are CPU seconds of this process (``time.process_time``; loading runs in the main process).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path

try:
    from benchmarks import _common as C
except ImportError:  # run as a script
    import _common as C

TARGET = 0.05


def write_folder(root: Path, n: int, fmt: str, size: int = 128) -> Path:
    """``n`` synthetic 128 px faces written as ``fmt`` ('png' or 'jpg') under ``root/fmt``."""
    import numpy as np
    from PIL import Image

    from multifeat.data import SyntheticFaces

    out = root / fmt
    out.mkdir(parents=True, exist_ok=True)
    ds = SyntheticFaces(num_samples=n, image_size=size, seed=0)
    for i in range(n):
        img = ((ds[i]["image"].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        im = Image.fromarray(img)
        if fmt == "png":
            im.save(out / f"{i:05d}.png")
        else:
            im.save(out / f"{i:05d}.jpg", quality=95)
    return out


def cpu_time(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def folder_rows(root: Path, n: int, sizes: list[int], batch: int) -> list[list]:
    from torch.utils.data import DataLoader

    from multifeat.data import ImageFolderDataset

    rows = []
    for fmt in ("png", "jpg"):
        folder = root / fmt
        for s in sizes:
            t0 = time.process_time()
            ds = ImageFolderDataset(folder, image_size=s, attrs={"bald": 1})
            t_setup = time.process_time() - t0
            t0 = time.process_time()
            for _ in DataLoader(ds, batch_size=batch, num_workers=0):
                pass
            t_load = time.process_time() - t0
            rows.append([f"folder {fmt.upper()} 128 px -> {s} px", n, n / t_setup, n / t_load])
    return rows


def step_time(cfg: dict, steps: int) -> float:
    """Median CPU seconds of one plain Phase-1 step with the config's networks."""
    import torch

    from multifeat.losses import lsgan_d_loss, lsgan_g_loss
    from multifeat.nets.dcgan import DCGANDiscriminator, DCGANGenerator

    torch.manual_seed(0)
    g = DCGANGenerator(z_dim=cfg["z_dim"], image_size=cfg["image_size"], width=cfg["g_width"], max_width=cfg["max_width"])
    d = DCGANDiscriminator(image_size=cfg["image_size"], width=cfg["d_width"], max_width=cfg["max_width"])
    og = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x = torch.rand(cfg["batch_size"], 3, cfg["image_size"], cfg["image_size"]) * 2 - 1

    def step():
        fake = g(torch.randn(x.shape[0], cfg["z_dim"]))
        loss_d = lsgan_d_loss(d(x), d(fake.detach()))
        od.zero_grad(set_to_none=True)
        loss_d.backward()
        od.step()
        d.requires_grad_(False)
        loss_g = lsgan_g_loss(d(fake))
        og.zero_grad(set_to_none=True)
        loss_g.backward()
        og.step()
        d.requires_grad_(True)

    step()
    return statistics.median(cpu_time(step) for _ in range(steps))


def batch_fetch_time(dm, batches: int) -> tuple[float, float]:
    """Median CPU seconds to fetch one training batch: (first epoch, second epoch). The first epoch
    is iterated in full, so a cache (``synthetic: {cache: true}``) is warm in the second."""
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = C.fetch_times(loader)
    second = C.fetch_times(loader, batches)
    return statistics.median(first), statistics.median(second)


def share_rows(folder: Path, smoke: bool, steps: int) -> list[list]:
    from multifeat.data import AttributeDataModule

    cfg = dict(image_size=32, z_dim=64, g_width=32, d_width=32, max_width=256, batch_size=64, num_samples=2048)
    if smoke:
        cfg.update(batch_size=8, num_samples=64)
    t_step = step_time(cfg, steps)
    n_batches = 4 if smoke else 8
    rows = []
    sources = [
        ("synthetic (phase1.yaml)", dict(source="synthetic", require={"bald": True}, num_samples=cfg["num_samples"])),
        ("synthetic, cache=True", dict(source="synthetic", require={"bald": True}, num_samples=cfg["num_samples"],
                                       synthetic={"cache": True})),
        ("folder PNG", dict(source="folder", root=str(folder), folder_attrs={"bald": 1})),
    ]
    for name, kw in sources:
        dm = AttributeDataModule(image_size=cfg["image_size"], batch_size=cfg["batch_size"], num_workers=0,
                                 val_fraction=0.0, seed=0, **kw)
        t_first, t_fetch = batch_fetch_time(dm, n_batches)
        share = t_fetch / (t_fetch + t_step)
        rows.append([name, cfg["batch_size"], t_first * 1e3, t_fetch * 1e3, t_step * 1e3, f"{100 * share:.1f}%",
                     "PASS" if share < TARGET else "FAIL"])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = C.parser(__doc__.split("\n\n")[0]).parse_args(argv)
    C.setup_threads(args.threads)
    n = 32 if args.smoke else (256 if args.quick else 512)
    sizes = [32] if args.smoke else [32, 64]
    batch = 8 if args.smoke else 64
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = Path(tmp)
        for fmt in ("png", "jpg"):
            write_folder(root, n, fmt)
        rows = folder_rows(root, n, sizes, batch)
        share = share_rows(root / "png", args.smoke, steps=2 if args.smoke else 5)
    C.print_header(
        "Data loading",
        notes=[f"{n} files per format, DataLoader batch {batch}, num_workers=0; CPU seconds of this process"],
    )
    print(C.markdown_table(["source", "files", "setup img/s", "load img/s"], rows, digits=0))
    print()
    print(C.markdown_table(["data (Phase-1 default sizes)", "batch", "fetch ms, epoch 1", "fetch ms, later", "step ms",
                            "loading share", "verdict"],
                           share, digits=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
