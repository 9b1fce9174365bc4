"""StyleGAN2 throughput (generator, discriminator, training step) and the speed of its building blocks.

    python benchmarks/bench_stylegan2.py             # 32, 64, 128 px, ops table
    python benchmarks/bench_stylegan2.py --quick      # 32, 64 px
    python benchmarks/bench_stylegan2.py --smoke      # 16 px, tiny channels (test suite)
    python benchmarks/bench_stylegan2.py --device cuda

Networks (CPU-sized, stated in the header): ``multifeat.nets.stylegan2`` Generator / Discriminator
with z = w = 128, 2 mapping layers, ``channel_base`` 4096, ``channel_max`` 128 (so 128 channels up
to 32 px, 64 at 64 px, 32 at 128 px), skip generator, resnet discriminator, batch 8. Rows:

* ``G fwd``: eval mode, no grad, constant noise (the sampling path: fused modulated convolution);
* ``G fwd+bwd``: training mode (modulated activations), random noise, backward of ``img.sum()``;
* ``D fwd`` (no grad) and ``D fwd+bwd`` (backward to weights and images);
* ``..., channels_last``: the same with every block's ``channels_last`` switched on (the official
  networks use it for their float16 blocks only);
* ``train step``: ``StyleGAN2ADA.training_step`` through ``lightning.Trainer`` (G main + D main on
  every batch, path length every 4th, R1 every 16th, EMA, ADA statistics): mean over the steps after
  the first, which covers the lazy regularisers at their intervals.

The second table times alternative implementations of the operations, each checked against the
package's implementation (max abs difference): modulated convolution fused (grouped conv, batch in
the groups) vs modulated activations; FIR upsampling/downsampling with the 2-D 4x4 filter vs its
separable 1-D form vs zero insertion + depthwise ``conv2d``; activations in channels_last.
Times are CPU seconds of this process on the CPU (wall seconds on CUDA), minimum over repeats.
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


def net_config(res: int, smoke: bool) -> dict:
    if smoke:
        return dict(z_dim=32, w_dim=32, channel_base=256, channel_max=32, batch=4, res=res)
    return dict(z_dim=128, w_dim=128, channel_base=4096, channel_max=128, batch=8, res=res)


def clock(device):
    """A (start, stop) pair measuring CPU seconds on the CPU, synchronised wall seconds on CUDA."""
    if device.type == "cuda":
        def now():
            C.sync(device)
            return time.perf_counter()
        return now
    return time.process_time


def best_time(fn, device, repeats: int, warmup: int = 1) -> float:
    now = clock(device)
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(max(1, repeats)):
        t0 = now()
        fn()
        ts.append(now() - t0)
    return min(ts)


def build_nets(cfg: dict, device):
    import torch

    from multifeat.nets.stylegan2 import Discriminator, Generator

    torch.manual_seed(0)
    G = Generator(
        z_dim=cfg["z_dim"], c_dim=0, w_dim=cfg["w_dim"], img_resolution=cfg["res"], img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": cfg["channel_base"], "channel_max": cfg["channel_max"], "conv_clamp": 256},
    ).to(device)
    D = Discriminator(
        c_dim=0, img_resolution=cfg["res"], img_channels=3, architecture="resnet", channel_base=cfg["channel_base"],
        channel_max=cfg["channel_max"], conv_clamp=256,
    ).to(device)
    return G, D


def network_rows(cfg: dict, device, repeats: int) -> list[list]:
    import torch

    G, D = build_nets(cfg, device)
    b = cfg["batch"]
    z = torch.randn(b, cfg["z_dim"], device=device)
    x = torch.randn(b, 3, cfg["res"], cfg["res"], device=device)

    def g_fwd():
        G.eval()
        with torch.no_grad():
            G(z, None, noise_mode="const")

    def g_fwd_bwd():
        G.train()
        G(z, None, noise_mode="random").sum().backward()

    def d_fwd():
        with torch.no_grad():
            D(x, None)

    def d_fwd_bwd():
        xr = x.clone().requires_grad_(True)
        D(xr, None).sum().backward()

    rows = []
    for name, fn in (("G fwd", g_fwd), ("G fwd+bwd", g_fwd_bwd), ("D fwd", d_fwd), ("D fwd+bwd", d_fwd_bwd)):
        t = best_time(fn, device, repeats)
        rows.append([cfg["res"], name, b, t * 1e3, b / t])
    # the same networks with every block in channels_last (the fp16 blocks' option, forced on in fp32)
    set_channels_last(G, True), set_channels_last(D, True)
    for name, fn in (("G fwd+bwd, channels_last", g_fwd_bwd), ("D fwd+bwd, channels_last", d_fwd_bwd)):
        t = best_time(fn, device, repeats)
        rows.append([cfg["res"], name, b, t * 1e3, b / t])
    return rows


def set_channels_last(net, on: bool) -> None:
    """Run every synthesis/discriminator block of ``net`` in channels_last (weights converted too)."""
    import torch

    for m in net.modules():
        if hasattr(m, "channels_last") and hasattr(m, "use_fp16") and getattr(m, "resolution", 8) > 4:
            m.channels_last = on  # the 4x4 synthesis block starts from a 3-D constant: stays contiguous
    net.to(memory_format=torch.channels_last if on else torch.contiguous_format)


def train_step_row(cfg: dict, device, steps: int) -> list:
    import torch
    from lightning.pytorch import Callback, Trainer
    from torch.utils.data import DataLoader, TensorDataset

    from multifeat.phases.stylegan2ada import StyleGAN2ADA

    torch.manual_seed(0)
    module = StyleGAN2ADA(
        image_size=cfg["res"], z_dim=cfg["z_dim"], w_dim=cfg["w_dim"], channel_base=cfg["channel_base"],
        channel_max=cfg["channel_max"], num_fixed=4, augment="bgc", augment_p=0.2,
    )
    b = cfg["batch"]
    data = torch.rand(b * (steps + 1), 3, cfg["res"], cfg["res"]) * 2 - 1
    loader = DataLoader(TensorDataset(data), batch_size=b, drop_last=True)
    cpu = device.type == "cpu"

    class Stamps(Callback):
        def __init__(self) -> None:
            self.t: list[float] = []

        def on_train_batch_end(self, *args, **kwargs) -> None:
            if not cpu:
                C.sync(device)
            self.t.append(time.process_time() if cpu else time.perf_counter())

    cb = Stamps()
    with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(
            accelerator="cpu" if cpu else "gpu", devices=1, max_steps=steps + 1, limit_val_batches=0,
            num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_checkpointing=False,
            enable_model_summary=False, default_root_dir=root, callbacks=[cb],
        ).fit(module, train_dataloaders=loader)
    dts = [b2 - a for a, b2 in zip(cb.t, cb.t[1:])]
    t = statistics.mean(dts) if dts else float("nan")
    return [cfg["res"], f"train step (mean of {len(dts)})", b, t * 1e3, b / t]


# ------------------------------------------------------------------------------------------------ ops
def zero_insert_upsample2d(x, f):
    """``upsample2d(x, f)`` for a 4x4 filter by zero insertion and a depthwise ``conv2d`` (reference)."""
    import torch.nn.functional as F

    n, c, h, w = x.shape
    z = x.new_zeros(n, c, 2 * h, 2 * w)
    z[:, :, ::2, ::2] = x
    z = F.pad(z, [2, 1, 2, 1])
    k = (f * 4).flip([0, 1]).to(x.dtype).reshape(1, 1, 4, 4).repeat(c, 1, 1, 1)
    return F.conv2d(z, k, groups=c)


def op_rows(device, repeats: int, smoke: bool) -> list[list]:
    import torch

    from multifeat.nets.stylegan2 import ops

    f2 = ops.setup_filter([1, 3, 3, 1], device=device)
    f1 = ops.setup_filter([1, 3, 3, 1], separable=True, device=device)
    shapes = [(8, 128, 32, 32), (8, 64, 64, 64), (8, 32, 128, 128)] if not smoke else [(2, 8, 16, 16)]
    rows = []

    def fb(fn):
        def run(x):
            xr = x.detach().requires_grad_(True)
            y = fn(xr)
            y.backward(torch.ones_like(y))
        return run

    for shape in shapes:
        x = torch.randn(*shape, device=device)
        xcl = x.contiguous(memory_format=torch.channels_last)
        ref_up = ops.upsample2d(x, f2)
        ref_down = ops.downsample2d(x, f2)
        cands = [
            ("upsample2d", "2-D filter (package)", lambda t: ops.upsample2d(t, f2), x, ref_up),
            ("upsample2d", "separable 1-D filter", lambda t: ops.upsample2d(t, f1), x, ref_up),
            ("upsample2d", "zero insertion + conv2d", lambda t: zero_insert_upsample2d(t, f2), x, ref_up),
            ("upsample2d", "channels_last input", lambda t: ops.upsample2d(t, f2), xcl, ref_up),
            ("downsample2d", "2-D filter (package)", lambda t: ops.downsample2d(t, f2), x, ref_down),
            ("downsample2d", "separable 1-D filter", lambda t: ops.downsample2d(t, f1), x, ref_down),
            ("downsample2d", "channels_last input", lambda t: ops.downsample2d(t, f2), xcl, ref_down),
        ]
        for op, variant, fn, inp, ref in cands:
            with torch.no_grad():
                err = (fn(inp) - ref).abs().max().item()
            tf = best_time(lambda fn=fn, inp=inp: fn(inp), device, repeats)
            tb = best_time(lambda fn=fn, inp=inp: fb(fn)(inp), device, repeats)
            rows.append([op, "x".join(map(str, shape)), variant, tf * 1e3, tb * 1e3, f"{err:.1e}"])

    mod_shapes = [(8, 128, 16, 1), (8, 128, 32, 2), (8, 64, 64, 2), (8, 32, 128, 2)] if not smoke else [(2, 8, 8, 2)]
    for n, c, r, up in mod_shapes:
        x = torch.randn(n, c, r // up, r // up, device=device)
        w = torch.randn(c, c, 3, 3, device=device)
        s = torch.randn(n, c, device=device)
        kw = dict(up=up, padding=1, resample_filter=f2, flip_weight=(up == 1))
        ref = ops.modulated_conv2d(x, w, s, fused=True, **kw)
        for variant, fused, fmt in (("fused grouped conv (package, eval)", True, torch.contiguous_format),
                                    ("modulated activations (package, train)", False, torch.contiguous_format),
                                    ("modulated activations, channels_last", False, torch.channels_last)):
            xi = x.contiguous(memory_format=fmt)
            wi = w.contiguous(memory_format=fmt)

            def fwd(xx, fused=fused, wi=wi, s=s, kw=kw):
                return ops.modulated_conv2d(xx, wi, s, fused=fused, **kw)

            with torch.no_grad():
                err = ((fwd(xi) - ref).abs().max() / ref.abs().max()).item()
            tf = best_time(lambda fwd=fwd, xi=xi: fwd(xi), device, repeats)
            tb = best_time(lambda fwd=fwd, xi=xi: fb(fwd)(xi), device, repeats)
            rows.append([f"modulated_conv2d up={up}", f"{n}x{c}x{r}x{r}", variant, tf * 1e3, tb * 1e3, f"{err:.1e} rel"])
    return rows


def run(args):
    import torch

    device = C.pick_device(getattr(args, "device", None))
    if args.smoke:
        sizes, repeats, steps = [16], 1, 2
    elif args.quick:
        sizes, repeats, steps = [32, 64], 2, 4
    else:
        sizes, repeats, steps = [32, 64, 128], 3, 8
    rows = []
    for res in sizes:
        cfg = net_config(res, args.smoke)
        rows += network_rows(cfg, device, repeats)
        rows.append(train_step_row(cfg, device, steps))
    cfg = net_config(sizes[0], args.smoke)
    notes = [
        f"device {device}; nets: z=w={cfg['z_dim']}, mapping 2 layers, channel_base {cfg['channel_base']}, "
        f"channel_max {cfg['channel_max']}, conv_clamp 256, batch {cfg['batch']}; "
        f"times: {'CPU' if device.type == 'cpu' else 'wall'} seconds, best of {repeats}",
    ]
    ops_table = None if args.no_ops else op_rows(device, repeats + 1, args.smoke)
    torch.set_grad_enabled(True)
    return device, rows, notes, ops_table


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.split("\n\n")[0], device=True)
    p.add_argument("--no-ops", action="store_true", help="skip the table of operation alternatives")
    args = p.parse_args(argv)
    C.setup_threads(args.threads)
    C.quiet_lightning()
    device, rows, notes, ops_table = run(args)
    C.print_header("StyleGAN2 throughput", device=device, notes=notes)
    print(C.markdown_table(["res", "what", "batch", "ms", "img/s"], rows, digits=1))
    if ops_table:
        print()
        print(C.markdown_table(["op", "input", "variant", "fwd ms", "fwd+bwd ms", "max diff"], ops_table, digits=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
