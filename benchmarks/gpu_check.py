"""GPU check: training and inference throughput of the package's networks on a CUDA device, in one
markdown table that names the GPU. Meant for a machine with a GPU; runs on the CPU too (tiny sizes).

    python benchmarks/gpu_check.py                           # CUDA, under 4 minutes on an H100
    python benchmarks/gpu_check.py --device cpu --quick      # the same code paths on the CPU
    python benchmarks/gpu_check.py --no-compile              # skip torch.compile

Needs torch, lightning and the package's networks only (no W&B, no jsonargparse). Rows:

* Phase 1 (DCGAN LSGAN, 64 px, default widths, batch 64): a plain PyTorch step in fp32 / bf16 / fp16
  autocast (fp16 without loss scaling: a speed figure), then ``Phase1GAN`` through
  ``lightning.Trainer`` with ``precision`` 32-true and bf16-mixed (the Lightning overhead on the GPU
  is their ratio to the plain fp32 step);
* Phase 3 (G3 grown from G1, D3, frozen D2; α/β losses) through ``Trainer``, when it imports;
* StyleGAN2 at 64 and 128 px (``channel_base`` 16384, ``channel_max`` 512, batch 32): G forward
  (eval, fused), G forward+backward and D forward+backward (training mode) in fp32 / bf16 / fp16
  autocast; a ``StyleGAN2ADA`` training step through ``Trainer`` in 32-true and bf16-mixed;
* ``torch.compile``: the Phase-1 step and the StyleGAN2 G forward, compile time (first calls)
  reported apart from the steady-state rate;
* DDP: a 2-process ``Phase1GAN`` fit when two or more CUDA devices are present (skipped otherwise).

Rates are medians of synchronised wall-clock steps after warm-up. A section that fails prints its
error in the notes instead of stopping the others. ``--budget`` (seconds, default 200) skips the
sections that would start after it is spent.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

try:
    from benchmarks import _common as C
except ImportError:  # run as a script
    import _common as C


class Check:
    def __init__(self, device, quick: bool, smoke: bool, budget: float) -> None:
        self.device, self.quick, self.smoke, self.budget = device, quick, smoke, budget
        self.t0 = time.perf_counter()
        self.rows: list[list] = []
        self.notes: list[str] = []
        self.cpu = device.type == "cpu"

    # ------------------------------------------------------------------ helpers
    def over_budget(self, name: str) -> bool:
        if time.perf_counter() - self.t0 > self.budget:
            self.notes.append(f"{name}: skipped (time budget of {self.budget:.0f} s spent)")
            return True
        return False

    def section(self, name: str, fn) -> None:
        if self.over_budget(name):
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one failing section must not hide the others
            self.notes.append(f"{name}: FAILED {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            if os.environ.get("GPU_CHECK_DEBUG"):
                traceback.print_exc()

    def steps(self, full: int) -> int:
        return 2 if self.smoke else (3 if self.quick else full)

    def time_steps(self, fn, n: int, warmup: int = 2) -> float:
        for _ in range(warmup):
            fn()
        ts = []
        for _ in range(n):
            ts.append(C.time_call(fn, self.device))
        return statistics.median(ts)

    def autocast(self, prec: str):
        import torch

        if prec == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if prec == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def add(self, what: str, prec: str, batch: int, seconds: float, note: str = "") -> None:
        self.rows.append([what, prec, batch, seconds * 1e3, batch / seconds, note])

    def trainer_fit(self, module, loader, steps: int, precision: str) -> float:
        """Median synchronised wall seconds per training batch of ``module`` through ``Trainer.fit``."""
        from lightning.pytorch import Callback, Trainer

        dev, stamps = self.device, []

        class Stamps(Callback):
            def on_train_batch_end(self, *args, **kwargs) -> None:
                C.sync(dev)
                stamps.append(time.perf_counter())

        with tempfile.TemporaryDirectory() as root:
            Trainer(
                accelerator="cpu" if self.cpu else "gpu", devices=1, precision=precision, max_steps=steps + 2,
                limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                enable_checkpointing=False, enable_model_summary=False, default_root_dir=root, callbacks=[Stamps()],
            ).fit(module, train_dataloaders=loader)
        dts = [b - a for a, b in zip(stamps, stamps[1:])][1:]
        return statistics.median(dts)

    def loader(self, n_batches: int, batch: int, size: int):
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        x = torch.rand(n_batches * batch, 3, size, size) * 2 - 1
        return DataLoader(TensorDataset(x), batch_size=batch, shuffle=True, drop_last=True,
                          pin_memory=not self.cpu)

    # ------------------------------------------------------------------ phase 1
    def p1_cfg(self) -> dict:
        if self.smoke:
            return dict(image_size=16, z_dim=16, g_width=8, d_width=8, max_width=32, batch=8)
        if self.cpu:
            return dict(image_size=32, z_dim=64, g_width=16, d_width=16, max_width=128, batch=16)
        return dict(image_size=64, z_dim=128, g_width=64, d_width=64, max_width=512, batch=64)

    def p1_nets(self):
        import torch

        from multifeat.nets.dcgan import DCGANDiscriminator, DCGANGenerator

        c = self.p1_cfg()
        torch.manual_seed(0)
        g = DCGANGenerator(z_dim=c["z_dim"], image_size=c["image_size"], width=c["g_width"], max_width=c["max_width"])
        d = DCGANDiscriminator(image_size=c["image_size"], width=c["d_width"], max_width=c["max_width"])
        return g.to(self.device), d.to(self.device), c

    def p1_step_fn(self, g, d, c, prec: str, g_run=None, d_run=None):
        import torch

        from multifeat.losses import lsgan_d_loss, lsgan_g_loss

        g_run = g if g_run is None else g_run  # (a compiled module has no truth value)
        d_run = d if d_run is None else d_run
        og = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        od = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        x = torch.rand(c["batch"], 3, c["image_size"], c["image_size"], device=self.device) * 2 - 1

        def step():
            with self.autocast(prec):
                fake = g_run(torch.randn(c["batch"], c["z_dim"], device=self.device))
                loss_d = lsgan_d_loss(d_run(x), d_run(fake.detach()))
            od.zero_grad(set_to_none=True)
            loss_d.backward()
            od.step()
            d.requires_grad_(False)
            with self.autocast(prec):
                loss_g = lsgan_g_loss(d_run(fake))
            og.zero_grad(set_to_none=True)
            loss_g.backward()
            og.step()
            d.requires_grad_(True)

        return step

    def phase1_plain(self) -> None:
        g, d, c = self.p1_nets()
        for prec in ("fp32", "bf16", "fp16"):
            t = self.time_steps(self.p1_step_fn(g, d, c, prec), self.steps(20))
            self.add(f"Phase 1 step, plain loop ({c['image_size']} px)", prec, c["batch"], t)

    def phase1_lightning(self) -> None:
        from multifeat.phases.phase1 import Phase1GAN

        c = self.p1_cfg()
        for precision in ("32-true", "bf16-mixed"):
            m = Phase1GAN(image_size=c["image_size"], z_dim=c["z_dim"], g_width=c["g_width"], d_width=c["d_width"],
                          max_width=c["max_width"], num_fixed=4)
            n = self.steps(20)
            t = self.trainer_fit(m, self.loader(n + 3, c["batch"], c["image_size"]), n, precision)
            self.add(f"Phase1GAN via Trainer ({c['image_size']} px)", precision, c["batch"], t)

    # ------------------------------------------------------------------ phase 3
    def phase3_lightning(self) -> None:
        from multifeat.phases.phase3 import Phase3GAN

        c = self.p1_cfg()
        arch = {
            "g1": dict(z_dim=c["z_dim"], image_size=c["image_size"], width=c["g_width"], max_width=c["max_width"]),
            "d3": dict(image_size=c["image_size"], width=c["d_width"], max_width=c["max_width"]),
            "d2": {"class_path": "multifeat.phases.feature_classifier.FeatureClassifier",
                   "hparams": {"image_size": c["image_size"], "feature": "bald"}},
        }
        res = c["image_size"] // 2
        m = Phase3GAN(arch=arch, add_blocks={res: 1}, adain_at=f"feat{res}", snapshot_epoch=None, num_fixed=4)
        n = self.steps(20)
        t = self.trainer_fit(m, self.loader(n + 3, c["batch"], c["image_size"]), n, "32-true")
        self.add(f"Phase3GAN via Trainer ({c['image_size']} px)", "32-true", c["batch"], t)

    # ------------------------------------------------------------------ StyleGAN2
    def sg_cfg(self, res: int) -> dict:
        if self.smoke:
            return dict(res=16, z=32, cb=256, cm=32, batch=4)
        if self.cpu:
            return dict(res=res, z=64, cb=1024, cm=64, batch=4)
        return dict(res=res, z=512, cb=16384, cm=512, batch=32)

    def sg_sizes(self) -> list[int]:
        return [16] if self.smoke else ([32] if self.quick else [64, 128])

    def sg_nets(self, c):
        import torch

        from multifeat.nets.stylegan2 import Discriminator, Generator

        torch.manual_seed(0)
        G = Generator(z_dim=c["z"], c_dim=0, w_dim=c["z"], img_resolution=c["res"], img_channels=3,
                      mapping_kwargs={"num_layers": 2},
                      synthesis_kwargs={"channel_base": c["cb"], "channel_max": c["cm"], "conv_clamp": 256})
        D = Discriminator(c_dim=0, img_resolution=c["res"], img_channels=3, channel_base=c["cb"], channel_max=c["cm"],
                          conv_clamp=256)
        return G.to(self.device), D.to(self.device)

    def stylegan2_nets(self) -> None:
        import torch

        for res in self.sg_sizes():
            c = self.sg_cfg(res)
            G, D = self.sg_nets(c)
            z = torch.randn(c["batch"], c["z"], device=self.device)
            x = torch.randn(c["batch"], 3, c["res"], c["res"], device=self.device)
            for prec in ("fp32", "bf16", "fp16"):
                def g_fwd(G=G, z=z, prec=prec):
                    G.eval()
                    with torch.no_grad(), self.autocast(prec):
                        G(z, None)

                def g_fb(G=G, z=z, prec=prec):
                    G.train()
                    with self.autocast(prec):
                        y = G(z, None, noise_mode="random").float().sum()
                    y.backward()

                def d_fb(D=D, x=x, prec=prec):
                    xr = x.clone().requires_grad_(True)
                    with self.autocast(prec):
                        y = D(xr, None).float().sum()
                    y.backward()

                n = self.steps(10)
                for what, fn in (("G fwd", g_fwd), ("G fwd+bwd", g_fb), ("D fwd+bwd", d_fb)):
                    self.add(f"StyleGAN2 {what} ({c['res']} px)", prec, c["batch"], self.time_steps(fn, n))

    def stylegan2_training(self) -> None:
        from multifeat.phases.stylegan2ada import StyleGAN2ADA

        for res in self.sg_sizes():
            c = self.sg_cfg(res)
            for precision in ("32-true", "bf16-mixed"):
                m = StyleGAN2ADA(image_size=c["res"], z_dim=c["z"], w_dim=c["z"], channel_base=c["cb"],
                                 channel_max=c["cm"], num_fixed=4, augment="bgc", augment_p=0.2)
                n = self.steps(16)
                t = self.trainer_fit(m, self.loader(n + 3, c["batch"], c["res"]), n, precision)
                self.add(f"StyleGAN2ADA step via Trainer ({c['res']} px)", precision, c["batch"], t,
                         "median; R1 every 16, PL every 4")

    # ------------------------------------------------------------------ torch.compile
    def compiled(self) -> None:
        import torch

        g, d, c = self.p1_nets()
        gc, dc = torch.compile(g), torch.compile(d)
        step = self.p1_step_fn(g, d, c, "fp32", gc, dc)
        t_compile = C.time_call(lambda: (step(), step()), self.device)
        t = self.time_steps(step, self.steps(20), warmup=1)
        self.add(f"Phase 1 step, torch.compile ({c['image_size']} px)", "fp32", c["batch"], t,
                 f"compile {t_compile:.1f} s")
        res = self.sg_sizes()[0]
        sc = self.sg_cfg(res)
        G, _ = self.sg_nets(sc)
        G.eval()
        Gc = torch.compile(G)
        z = torch.randn(sc["batch"], sc["z"], device=self.device)

        def fwd():
            with torch.no_grad():
                Gc(z, None)

        t_compile = C.time_call(lambda: (fwd(), fwd()), self.device)
        t = self.time_steps(fwd, self.steps(10), warmup=1)
        self.add(f"StyleGAN2 G fwd, torch.compile ({sc['res']} px)", "fp32", sc["batch"], t, f"compile {t_compile:.1f} s")

    # ------------------------------------------------------------------ DDP
    def ddp(self) -> None:
        import torch

        if self.cpu or torch.cuda.device_count() < 2:
            self.notes.append(f"DDP: skipped ({'CPU run' if self.cpu else 'fewer than 2 CUDA devices'})")
            return
        env = dict(os.environ, PYTHONPATH=str(C.ROOT))
        out = subprocess.run([sys.executable, __file__, "--ddp-worker"], capture_output=True, text=True, env=env,
                             timeout=150, cwd=str(C.ROOT))
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("DDP_RESULT")]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"exit {out.returncode}: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
        _, ms, batch = lines[-1].split()
        self.rows.append(["Phase1GAN via Trainer, DDP 2 GPUs (per-GPU batch)", "32-true", int(batch), float(ms),
                          2 * int(batch) / (float(ms) / 1e3), "img/s of both GPUs"])


def ddp_worker() -> int:
    """Run under Lightning's DDP launcher (re-executes this script per process)."""
    import torch
    from lightning.pytorch import Callback, Trainer
    from torch.utils.data import DataLoader, TensorDataset

    from multifeat.phases.phase1 import Phase1GAN

    C.quiet_lightning()
    batch, steps = 64, 20
    stamps: list[float] = []

    class Stamps(Callback):
        def on_train_batch_end(self, *args, **kwargs) -> None:
            torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    m = Phase1GAN(image_size=64, num_fixed=4)
    x = torch.rand(batch * 2 * (steps + 4), 3, 64, 64) * 2 - 1
    trainer = Trainer(accelerator="gpu", devices=2, strategy="ddp", max_steps=steps + 2, limit_val_batches=0,
                      num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                      enable_model_summary=False, callbacks=[Stamps()], default_root_dir=tempfile.mkdtemp())
    trainer.fit(m, train_dataloaders=DataLoader(TensorDataset(x), batch_size=batch, drop_last=True))
    if trainer.global_rank == 0:
        dts = [b - a for a, b in zip(stamps, stamps[1:])][1:]
        print(f"DDP_RESULT {statistics.median(dts) * 1e3:.3f} {batch}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.split("\n\n")[0], device=True)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile section")
    p.add_argument("--budget", type=float, default=200.0, help="seconds after which remaining sections are skipped")
    p.add_argument("--ddp-worker", action="store_true", help=argparse_hidden())
    args = p.parse_args(argv)
    if args.ddp_worker:
        return ddp_worker()
    device = C.pick_device(args.device)
    if device.type == "cpu":
        C.setup_threads(args.threads)
    C.quiet_lightning()
    import torch

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    chk = Check(device, args.quick, args.smoke, args.budget)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chk.section("Phase 1 plain", chk.phase1_plain)
        chk.section("Phase 1 Lightning", chk.phase1_lightning)
        chk.section("Phase 3 Lightning", chk.phase3_lightning)
        chk.section("StyleGAN2 nets", chk.stylegan2_nets)
        chk.section("StyleGAN2 training", chk.stylegan2_training)
        if not (args.no_compile or args.smoke):
            chk.section("torch.compile", chk.compiled)
        chk.section("DDP", chk.ddp)
    total = time.perf_counter() - chk.t0
    extra = [f"device {device}; total {total:.0f} s; torch {torch.__version__}"]
    if device.type == "cuda":
        extra.append(f"GPU: {torch.cuda.get_device_name(device)}; cudnn.benchmark on; TF32 matmul "
                     f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}")
    try:
        import lightning

        extra.append(f"lightning {lightning.__version__}")
    except ImportError:
        pass
    C.print_header("GPU check" if device.type == "cuda" else "GPU check (run on the CPU)", device=device,
                   notes=extra + chk.notes)
    print(C.markdown_table(["what", "precision", "batch", "ms/step", "img/s", "note"], chk.rows, digits=1))
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
