"""Train one phase at tiny size, optionally SIGKILL itself at a step, resume, save the final weights.

Run as a subprocess by ``test_resume.py``::

    python resume_worker.py PHASE ROOT --max-steps N --every K [--kill-step S [--in-write]] [--resume] [--g1 P --d2 P]
    python resume_worker.py references ROOT --max-steps N --every K

``--kill-step S``: the process kills itself with SIGKILL after training step S (``--in-write``:
during the first checkpoint write at or after step S, after the data reached the temporary file
and before the rename). ``--resume``: fit with ``ckpt_path="last"``. On a normal end the final
``state_dict`` is written to ``ROOT/final.pt`` and the last checkpoint's global step printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import torch

torch.set_num_threads(1)

import lightning as L  # noqa: E402
from lightning.pytorch import Callback  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from multifeat.io.atomic_checkpoint_io import AtomicCheckpointIO  # noqa: E402


def build(phase: str, args):
    """(module, datamodule) at tiny size; every data module shuffles with its own generator."""
    from multifeat.data import AttributeDataModule, FeatureClassifierDataModule

    common = dict(source="synthetic", image_size=16, num_samples=48, batch_size=8, val_fraction=0.0, seed=3,
                  synthetic={"cache": True})
    if phase == "phase1":
        from multifeat.phases import Phase1GAN

        return Phase1GAN(image_size=16, z_dim=8, g_width=4, d_width=4, max_width=16, ema_decay=0.9), \
            AttributeDataModule(**common)
    if phase == "phase2":
        from multifeat.phases import FeatureClassifier

        return FeatureClassifier(image_size=16, width=4, max_width=16, dropout=0.2), \
            FeatureClassifierDataModule(feature="bald", **common)
    if phase == "phase3":
        from multifeat.phases import Phase3GAN

        return Phase3GAN(g1_ckpt=args.g1, d2_ckpt=args.d2, add_blocks=[8], adain_at="feat8", snapshot_epoch=1), \
            AttributeDataModule(**common)
    if phase == "stylegan2":
        from multifeat.phases import StyleGAN2ADA

        m = StyleGAN2ADA(image_size=16, z_dim=8, w_dim=8, mapping_layers=1, channel_base=32, channel_max=8,
                         mbstd_group_size=2, r1_interval=2, pl_interval=2, augment="bgc", augment_p=0.3,
                         ada_target=0.6, ada_interval=1, ada_kimg=0.1, style_mixing_prob=0.5, conv_clamp=None)
        return m, AttributeDataModule(**common)
    raise SystemExit(f"unknown phase {phase}")


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def kill_in_next_write(after_step_of, step: int) -> None:
    """SIGKILL inside the next checkpoint write at or after ``step``: the new bytes are complete in
    the temporary file beside the target, the rename has not happened."""
    import multifeat.utils.files as files

    real_fsync = files.os.fsync

    def fsync(fd):
        real_fsync(fd)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if after_step_of() >= step and name.endswith(".tmp") and ".ckpt." in name:
            os.kill(os.getpid(), signal.SIGKILL)

    files.os.fsync = fsync  # the module's os; the module only uses it for these writes


def run(phase: str, root: str, args, kill_step=None, in_write=False, resume=False) -> None:
    """One fit of ``phase`` into ``root``; the final weights go to ``root/final.pt``."""
    L.seed_everything(0, workers=True, verbose=False)
    module, dm = build(phase, args)
    callbacks = [ModelCheckpoint(dirpath=os.path.join(root, "ckpt"), save_last=True, save_top_k=0,
                                 every_n_train_steps=args.every)]
    trainer = L.Trainer(max_steps=args.max_steps, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=root, deterministic=True,
                        plugins=[AtomicCheckpointIO()], callbacks=callbacks)
    if kill_step is not None:
        if in_write:
            kill_in_next_write(lambda: trainer.global_step, kill_step)
        else:
            trainer.callbacks.insert(0, KillAt(kill_step))
    trainer.fit(module, datamodule=dm, ckpt_path="last" if resume else None)
    torch.save({k: v.detach().clone() for k, v in module.state_dict().items()}, os.path.join(root, "final.pt"))
    print(phase, "global_step", trainer.global_step, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", help="phase1, phase2, phase3, stylegan2, or 'references': all four uninterrupted, "
                                  "into ROOT/<phase> (phase 3 grows ROOT/phase1's G1 with ROOT/phase2's D2)")
    ap.add_argument("root")
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--every", type=int, required=True)
    ap.add_argument("--kill-step", type=int, default=None)
    ap.add_argument("--in-write", action="store_true")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-rng", action="store_true", help="negative control: resume without RNGState")
    ap.add_argument("--g1")
    ap.add_argument("--d2")
    args = ap.parse_args()
    if args.no_rng:
        from multifeat.phases.base import PhaseModule

        PhaseModule.configure_callbacks = lambda self: []
    if args.phase == "references":
        for phase in ("phase1", "phase2", "phase3", "stylegan2"):
            args.g1 = os.path.join(args.root, "phase1", "ckpt", "last.ckpt")
            args.d2 = os.path.join(args.root, "phase2", "ckpt", "last.ckpt")
            run(phase, os.path.join(args.root, phase), args)
        return 0
    run(args.phase, args.root, args, args.kill_step, args.in_write, args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
