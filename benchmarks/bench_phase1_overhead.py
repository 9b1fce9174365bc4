"""Lightning overhead of a Phase-1 training step: Phase1GAN through ``Trainer.fit`` vs a plain loop.

    python benchmarks/bench_phase1_overhead.py            # experiments/phase1.yaml sizes, 6 rounds
    python benchmarks/bench_phase1_overhead.py --quick    # 3 rounds
    python benchmarks/bench_phase1_overhead.py --smoke    # tiny nets, seconds (test suite)

Both sides use identical networks (the DCGAN G1/D1 of ``experiments/phase1.yaml``: 32 px, z 64,
widths 32, cap 256, BatchNorm), batch 64, Adam(2e-4, (0.5, 0.999)), the LSGAN losses, one D update
and one G update per batch reusing the batch's fakes, and the same in-memory DataLoader. The plain
loop is the idiomatic PyTorch version of that step (no guard, no logging). The Lightning rows run
``Phase1GAN.training_step`` unchanged (non-finite guard, toggle_optimizer, ``self.log``):

* ``lightning (bare)``: no logger, no progress bar, no checkpointing;
* ``lightning (logger+bar)``: CSVLogger with ``log_every_n_steps=20`` and the progress bar, as a run
  of the shipped config does (W&B swapped for CSV: the bench needs no W&B).

The step time of a row is the median, over rounds, of the median interval between consecutive
``on_train_batch_end`` calls (plain loop: between iterations, data loading included), after the
first ``warmup`` steps of every block, in wall seconds and in CPU seconds of this process
(``time.process_time``). Blocks of the variants are interleaved round by round, so background load
affects them alike. The verdict uses the CPU-time ratio, which a shared, loaded machine distorts far
less than wall time (on an idle machine with one thread the two agree). Target: lightning / plain <= 1.05.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings

try:
    from benchmarks import _common as C
except ImportError:  # run as a script
    import _common as C

TARGET = 1.05


def _now() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process)."""
    return time.perf_counter(), time.process_time()


def build_config(smoke: bool) -> dict:
    if smoke:
        return dict(image_size=16, z_dim=16, g_width=8, d_width=8, max_width=32, batch=16)
    return dict(image_size=32, z_dim=64, g_width=32, d_width=32, max_width=256, batch=64)


def make_loader(cfg: dict, n_batches: int, seed: int = 0):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    s = cfg["image_size"]
    x = torch.rand(n_batches * cfg["batch"], 3, s, s, generator=g) * 2 - 1
    return DataLoader(TensorDataset(x), batch_size=cfg["batch"], shuffle=True, drop_last=True, num_workers=0)


def make_module(cfg: dict):
    from multifeat.phases.phase1 import Phase1GAN

    return Phase1GAN(
        image_size=cfg["image_size"], z_dim=cfg["z_dim"], g_width=cfg["g_width"], d_width=cfg["d_width"],
        max_width=cfg["max_width"], num_fixed=8,
    )


def plain_block(g, d, opt_g, opt_d, loader, steps: int) -> list[float]:
    """``steps`` plain-PyTorch Phase-1 steps; returns the per-step wall intervals."""
    import torch

    from multifeat.losses import lsgan_d_loss, lsgan_g_loss

    times = []
    it = iter(loader)
    t_prev = _now()
    for _ in range(steps):
        try:
            (x,) = next(it)
        except StopIteration:
            it = iter(loader)
            (x,) = next(it)
        z = torch.randn(x.shape[0], g.z_dim)
        fake = g(z)
        d.requires_grad_(True)
        loss_d = lsgan_d_loss(d(x), d(fake.detach()))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d.requires_grad_(False)
        loss_g = lsgan_g_loss(d(fake))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        t = _now()
        times.append((t[0] - t_prev[0], t[1] - t_prev[1]))
        t_prev = t
    d.requires_grad_(True)
    return times


def lightning_block(module, loader, steps: int, with_logger: bool, root: str) -> list[float]:
    """``steps`` Phase1GAN steps through ``Trainer.fit``; returns the per-step wall intervals."""
    from lightning.pytorch import Callback, Trainer
    from lightning.pytorch.loggers import CSVLogger

    class StepTimes(Callback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_train_batch_end(self, *args, **kwargs) -> None:
            self.stamps.append(_now())

    cb = StepTimes()
    trainer = Trainer(
        accelerator="cpu", devices=1, max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0,
        logger=CSVLogger(root, name="bench") if with_logger else False, log_every_n_steps=20,
        enable_progress_bar=with_logger, enable_checkpointing=False, enable_model_summary=False,
        default_root_dir=root, callbacks=[cb],
    )
    trainer.fit(module, train_dataloaders=loader)
    s = cb.stamps if cb.stamps else []
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(s, s[1:])]


def run(args) -> tuple[list[str], list[list], list[str]]:
    import torch

    from multifeat.phases.phase1 import Phase1GAN  # noqa: F401  (import cost outside the timing)

    cfg = build_config(args.smoke)
    rounds = 1 if args.smoke else (3 if args.quick else 6)
    steps = 6 if args.smoke else (20 if args.quick else 30)
    warmup = 2 if args.smoke else 4
    loader = make_loader(cfg, n_batches=8 if args.smoke else 16)

    torch.manual_seed(0)
    ref = make_module(cfg)
    g, d = ref.generator, ref.discriminator
    g.train(), d.train()
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    module_bare = make_module(cfg)
    module_log = make_module(cfg)

    per_round: dict[str, list[tuple[float, float]]] = {"plain": [], "bare": [], "logged": []}
    with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(rounds):
            # the order alternates so that no variant always follows the same one
            for name in ("plain", "bare", "logged") if _ % 2 == 0 else ("logged", "bare", "plain"):
                if name == "plain":
                    t = plain_block(g, d, opt_g, opt_d, loader, steps + 1)
                elif name == "bare":
                    t = lightning_block(module_bare, loader, steps + 1, False, root)
                else:
                    t = lightning_block(module_log, loader, steps + 1, True, root)
                t = t[warmup:] or t
                per_round[name].append((statistics.median(w for w, _ in t), statistics.median(c for _, c in t)))
    wall = {k: statistics.median(w for w, _ in v) for k, v in per_round.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in per_round.items()}
    cols = ["variant", "wall ms", "cpu ms", "img/s", "wall vs plain", "cpu vs plain", "target", "verdict"]
    rows = []
    labels = {"plain": "plain PyTorch loop", "bare": "lightning (bare)", "logged": "lightning (logger+bar)"}
    for k in ("plain", "bare", "logged"):
        rw, rc = wall[k] / wall["plain"], cpu[k] / cpu["plain"]
        target = "-" if k == "plain" else f"<= {TARGET}"
        verdict = "-" if k == "plain" else ("PASS" if rc <= TARGET else "FAIL")
        rows.append([labels[k], wall[k] * 1e3, cpu[k] * 1e3, cfg["batch"] / wall[k], f"{rw:.3f}", f"{rc:.3f}",
                     target, verdict])
    notes = [
        f"config: {cfg['image_size']} px, z {cfg['z_dim']}, widths {cfg['g_width']}/{cfg['d_width']} "
        f"(cap {cfg['max_width']}), batch {cfg['batch']}; {rounds} rounds x {steps} steps, first {warmup} of each block dropped",
    ]
    return cols, rows, notes


def main(argv: list[str] | None = None) -> int:
    args = C.parser(__doc__.split("\n\n")[0]).parse_args(argv)
    C.setup_threads(args.threads)
    C.quiet_lightning()
    cols, rows, notes = run(args)
    C.print_header("Phase-1 step: Lightning vs plain PyTorch (CPU)", notes=notes)
    print(C.markdown_table(cols, rows, digits=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
