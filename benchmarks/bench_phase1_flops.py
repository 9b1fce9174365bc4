"""Arithmetic efficiency of a Phase-1 step on the CPU: counted FLOPs / time, as a fraction of the
fp32 matrix-multiply rate measured in the same run.

    python benchmarks/bench_phase1_flops.py             # all variants, 5 repeats
    python benchmarks/bench_phase1_flops.py --quick     # the main variants, 3 repeats
    python benchmarks/bench_phase1_flops.py --compile   # adds torch.compile (compile time reported apart)
    python benchmarks/bench_phase1_flops.py --smoke     # tiny nets, seconds (test suite)

The step is Phase 1's: one D1 update on a real and a fake batch (LSGAN), then one G1 update through
D1 with D1's parameters frozen, reusing the batch's fakes; Adam(2e-4, (0.5, 0.999)). Networks: the
DCGAN G1/D1 with 64 channels at full resolution (512 at 4x4), 32 px, BatchNorm, batch 64, z 128 —
the package's default widths at 32 px. FLOPs are counted once per variant with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products, forward and
backward; the optimiser's element-wise work is not counted). The matmul rate is the median rate
of a 1024^3 fp32 ``torch.mm``, measured between the variants so that machine load affects both.

``fraction = (FLOPs of the reference step / step time) / matmul rate``: the reference step's FLOPs
are used for every variant, so a variant that recomputes work is charged for it. Both times are CPU
seconds of this process (``time.process_time``), which a shared, loaded machine distorts far less
than wall time; wall times are shown too. Target >= 0.5.
"""

from __future__ import annotations

import contextlib
import statistics
import time

try:
    from benchmarks import _common as C
except ImportError:  # run as a script
    import _common as C

TARGET = 0.5


def config(smoke: bool) -> dict:
    if smoke:
        return dict(image_size=16, z_dim=16, width=8, max_width=32, batch=8, norm="batch")
    return dict(image_size=32, z_dim=128, width=64, max_width=512, batch=64, norm="batch")


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call of ``fn``."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def matmul_rate(n: int = 1024, calls: int = 3) -> tuple[float, float]:
    """Median fp32 FLOP/s of ``torch.mm`` on n x n matrices (2 n^3 FLOPs a call): (per wall s, per CPU s)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t = [timed(lambda: torch.mm(a, b)) for _ in range(calls)]
    return 2 * n**3 / statistics.median(w for w, _ in t), 2 * n**3 / statistics.median(c for _, c in t)


class Variant:
    """One way of running the Phase-1 step."""

    def __init__(self, name: str, reuse: bool = True, channels_last: bool = False, adam: dict | None = None,
                 mkldnn: bool = True, norm: str | None = None, autocast_bf16: bool = False, compile: bool = False):
        self.name, self.reuse, self.channels_last, self.adam = name, reuse, channels_last, adam or {}
        self.mkldnn, self.norm, self.autocast_bf16, self.compile = mkldnn, norm, autocast_bf16, compile
        self.compile_s = float("nan")

    def build(self, cfg: dict):
        import torch

        from multifeat.nets.dcgan import DCGANDiscriminator, DCGANGenerator

        torch.manual_seed(0)
        norm = self.norm or cfg["norm"]
        g = DCGANGenerator(z_dim=cfg["z_dim"], image_size=cfg["image_size"], width=cfg["width"],
                           max_width=cfg["max_width"], norm=norm)
        d = DCGANDiscriminator(image_size=cfg["image_size"], width=cfg["width"], max_width=cfg["max_width"], norm=norm)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        g.to(memory_format=fmt), d.to(memory_format=fmt)
        opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999), **self.adam)
        opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999), **self.adam)
        g_run, d_run = (torch.compile(g), torch.compile(d)) if self.compile else (g, d)
        self.g, self.d, self.opt_g, self.opt_d, self.g_run, self.d_run, self.fmt = g, d, opt_g, opt_d, g_run, d_run, fmt
        gen = torch.Generator().manual_seed(1)
        s = cfg["image_size"]
        self.x = (torch.rand(cfg["batch"], 3, s, s, generator=gen) * 2 - 1).contiguous(memory_format=fmt)
        self.z_dim = cfg["z_dim"]

    @contextlib.contextmanager
    def context(self):
        import torch

        prev = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = self.mkldnn
        try:
            if self.autocast_bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    yield
            else:
                yield
        finally:
            torch.backends.mkldnn.enabled = prev

    def step(self) -> None:
        import torch

        from multifeat.losses import lsgan_d_loss, lsgan_g_loss

        g, d, x = self.g_run, self.d_run, self.x
        with self.context():
            z = torch.randn(x.shape[0], self.z_dim)
            if self.reuse:
                fake = g(z)
            else:
                with torch.no_grad():
                    fake = g(z)
            loss_d = lsgan_d_loss(d(x), d(fake.detach()))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.d.requires_grad_(False)
        with self.context():
            if not self.reuse:
                fake = g(z)
            loss_g = lsgan_g_loss(d(fake))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.d.requires_grad_(True)

    def count_flops(self) -> int:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            self.step()
        return int(fc.get_total_flops())


def variants(quick: bool, smoke: bool, with_compile: bool) -> list[Variant]:
    v = [
        Variant("reference: reuse fakes, contiguous, Adam default"),
        Variant("recompute G(z) for the G step", reuse=False),
        Variant("channels_last", channels_last=True),
        Variant("Adam foreach=True", adam={"foreach": True}),
        Variant("Adam fused=True", adam={"fused": True}),
    ]
    if not quick or smoke:
        v += [
            Variant("mkldnn disabled", mkldnn=False),
            Variant("channels_last + Adam fused", channels_last=True, adam={"fused": True}),
            Variant("no BatchNorm (norm=none; another model)", norm="none"),
            Variant("bf16 autocast", autocast_bf16=True),
        ]
    if with_compile:
        v.append(Variant("torch.compile(G), torch.compile(D)", compile=True))
    return v


def run(args) -> tuple[list[str], list[list], list[str]]:
    cfg = config(args.smoke)
    repeats = 2 if args.smoke else (3 if args.quick else 5)
    vs = variants(args.quick, args.smoke, getattr(args, "compile", False))
    ref_flops = None
    results = []
    rates = [matmul_rate(256 if args.smoke else 1024)]
    for v in vs:
        v.build(cfg)
        if v.compile:
            t0 = time.perf_counter()
            v.step()
            v.step()
            v.compile_s = time.perf_counter() - t0
        else:
            v.step()  # warm-up (oneDNN primitive creation)
        flops = v.count_flops() if not v.compile else ref_flops
        if ref_flops is None:
            ref_flops = flops
        t = [timed(v.step) for _ in range(repeats)]
        rates.append(matmul_rate(256 if args.smoke else 1024))
        results.append((v, flops, statistics.median(w for w, _ in t), statistics.median(c for _, c in t)))
    mm_wall = statistics.median(w for w, _ in rates)
    mm = statistics.median(c for _, c in rates)
    cols = ["variant", "GFLOP/step", "wall ms", "cpu ms", "img/s", "GFLOP/cpu-s", "fraction", "verdict", "compile s"]
    rows = []
    for v, flops, tw, tc in results:
        frac = ref_flops / tc / mm
        verdict = "PASS" if frac >= TARGET else "below"
        rows.append([v.name, flops / 1e9, tw * 1e3, tc * 1e3, cfg["batch"] / tw, ref_flops / tc / 1e9, f"{frac:.2f}",
                     verdict, f"{v.compile_s:.1f}" if v.compile else "-"])
    notes = [
        f"config: {cfg['image_size']} px, z {cfg['z_dim']}, width {cfg['width']} (cap {cfg['max_width']}), "
        f"batch {cfg['batch']}, {repeats} timed steps per variant (median)",
        f"fp32 matmul rate (median of {len(rates)} measurements): {mm / 1e9:.1f} GFLOP per CPU second "
        f"({mm_wall / 1e9:.1f} per wall second); target fraction >= {TARGET}",
    ]
    return cols, rows, notes


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--compile", action="store_true", help="add a torch.compile variant (slow to compile on CPU)")
    args = p.parse_args(argv)
    C.setup_threads(args.threads)
    cols, rows, notes = run(args)
    C.print_header("Phase-1 step: FLOP rate vs fp32 matmul rate (CPU)", notes=notes)
    print(C.markdown_table(cols, rows, digits=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
