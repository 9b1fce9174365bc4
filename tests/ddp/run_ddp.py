"""Train one phase for a few steps under DDP on CPU (gloo) and record what every rank saw and wrote.

Usage (run by ``tests/ddp/test_ddp.py``; Lightning's ``ddp`` strategy starts the other processes by
running this script again with the same arguments)::

    python tests/ddp/run_ddp.py {phase1,phase3,stylegan2ada} OUT_DIR [--inputs DIR] [--devices 2] [--steps 4]

Everything the phase writes goes under ``OUT_DIR/run`` (bank, sample grids, checkpoints, CSV logs).
Each rank writes ``OUT_DIR/ranks/rank<r>.json`` with:

- ``rank``, ``world_size``, ``global_step``;
- ``writes``: every file this *process* created or replaced under ``OUT_DIR`` (``open`` in a write
  mode, ``os.open`` with ``O_CREAT``/``O_WRONLY``, ``os.replace``/``os.rename`` targets), relative to it,
  so a write attempt by a non-zero rank is visible even when it names the same file as rank 0's.
  Every process first writes ``canary/pid<pid>.txt`` itself, which shows the probe works there;
- ``params``: SHA-256 of every trainable parameter after training (name -> hex digest), and
  ``params_initial`` the same when training starts (after DDP's initial broadcast);
- ``indices``: the dataset indices of the batches this rank trained on;
- ``ada`` (StyleGAN2ADA): per update, this rank's own sign statistics ``[sum of signs, count]``
  before they are reduced, the global batch, ``p`` before and after; ``p_final``, the settings.

For StyleGAN2ADA the sign statistics are skewed per rank (rank 0 sees every real logit as positive,
rank 1 as negative) so that reducing them across ranks gives a different ``p`` than either rank's
own statistics would: a missing reduction cannot go unnoticed.
"""

from __future__ import annotations

import argparse
import builtins
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

# ------------------------------------------------------------------------------------- write probe
_WRITES: list[str] = []
_ROOT: Path | None = None


def _note(path) -> None:
    if _ROOT is None:
        return
    try:
        p = Path(os.fsdecode(path)).resolve()
    except (TypeError, ValueError):
        return
    if p == _ROOT or _ROOT in p.parents:
        _WRITES.append(str(p.relative_to(_ROOT)))


def install_probe(root: Path) -> None:
    """Record every file this process creates or replaces under ``root``."""
    global _ROOT
    _ROOT = root.resolve()
    real_open, real_os_open, real_replace, real_rename = builtins.open, os.open, os.replace, os.rename

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            _note(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            _note(path)
        return real_os_open(path, flags, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        _note(dst)
        return real_replace(src, dst, *args, **kwargs)

    def rename(src, dst, *args, **kwargs):
        _note(dst)
        return real_rename(src, dst, *args, **kwargs)

    builtins.open, os.open, os.replace, os.rename = open_, os_open, replace, rename
    install_probe.restore = lambda: (  # type: ignore[attr-defined]
        setattr(builtins, "open", real_open), setattr(os, "open", real_os_open),
        setattr(os, "replace", real_replace), setattr(os, "rename", real_rename),
    )


# ------------------------------------------------------------------------------------- phases
TINY_DATA = dict(image_size=16, num_samples=32, batch_size=4, val_fraction=0.0)


def phase1(args):
    from multifeat.callbacks import NegativeBank, SampleGrid
    from multifeat.data import AttributeDataModule
    from multifeat.phases import Phase1GAN

    module = Phase1GAN(image_size=16, z_dim=8, g_width=4, d_width=4, max_width=16, num_fixed=4)
    data = AttributeDataModule(require={"bald": True}, **TINY_DATA)
    run = Path(args.out) / "run"
    callbacks = [NegativeBank(bank_dir=str(run / "negatives"), first_steps=3, every_n_steps=1, per_save=2),
                 SampleGrid(every_n_steps=2, dirpath=str(run / "samples"))]
    return module, data, callbacks, {}


def phase3(args):
    from multifeat.callbacks import SampleGrid
    from multifeat.data.switching import SwitchingDataModule
    from multifeat.phases import Phase3GAN

    inputs = Path(args.inputs)
    module = Phase3GAN(g1_ckpt=str(inputs / "phase1.ckpt"), d2_ckpt=str(inputs / "phase2.ckpt"),
                       add_blocks={8: 1}, adain_at="feat8", snapshot_epoch=1, num_fixed=4)
    data = SwitchingDataModule(before={"beard": True, "bald": False}, after={"bald": True, "beard": False},
                               **TINY_DATA)
    callbacks = [SampleGrid(every_n_steps=2, dirpath=str(Path(args.out) / "run" / "samples"))]
    return module, data, callbacks, {"reload_dataloaders_every_n_epochs": 1}


ADA = dict(augment_p=0.5, ada_target=0.6, ada_interval=1, ada_kimg=0.1)


def stylegan2ada(args):
    from multifeat.callbacks import SampleGrid
    from multifeat.data import AttributeDataModule
    from multifeat.phases import StyleGAN2ADA

    class RecordingStyleGAN2ADA(StyleGAN2ADA):
        """Skews this rank's ADA sign statistics and records them before every update."""

        ada_log: list[dict] = []

        def accumulate_ada(self, real_logits):
            offset = 1e4 if self.global_rank == 0 else -1e4
            super().accumulate_ada(real_logits.detach().float() + offset)

        def update_ada(self, global_batch):
            local = [float(v) for v in self.ada_stats]
            p_before = float(self.augment_pipe.p)
            rt = super().update_ada(global_batch)
            self.ada_log.append({"local": local, "global_batch": int(global_batch), "p_before": p_before,
                                 "p_after": float(self.augment_pipe.p), "rt": rt})
            return rt

    module = RecordingStyleGAN2ADA(image_size=16, z_dim=8, w_dim=8, channel_base=64, channel_max=8,
                                   mbstd_group_size=2, num_fixed=4, r1_interval=2, pl_interval=2, **ADA)
    data = AttributeDataModule(**TINY_DATA)
    return module, data, [SampleGrid(every_n_steps=2, dirpath=str(Path(args.out) / "run" / "samples"))], {}


PHASES = {"phase1": phase1, "phase3": phase3, "stylegan2ada": stylegan2ada}


def _recorder():
    from lightning.pytorch import Callback

    class Recorder(Callback):
        """Parameters after DDP's initial broadcast, and the dataset indices this rank trained on."""

        def __init__(self):
            self.initial: dict[str, str] = {}
            self.indices: list[int] = []

        def on_train_start(self, trainer, pl_module):
            self.initial = param_digests(pl_module)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if isinstance(batch, dict) and "index" in batch:
                self.indices += [int(i) for i in batch["index"]]

    return Recorder()


def param_digests(module: torch.nn.Module) -> dict[str, str]:
    return {name: hashlib.sha256(p.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for name, p in module.named_parameters() if p.requires_grad}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=sorted(PHASES))
    parser.add_argument("out")
    parser.add_argument("--inputs", default=None)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--strategy", default="ddp_find_unused_parameters_true")
    args = parser.parse_args(argv)

    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    out = Path(args.out)
    run = out / "run"
    run.mkdir(parents=True, exist_ok=True)
    install_probe(out)
    # a canary write per process shows that the probe records this process's writes
    canary = out / "canary"
    canary.mkdir(exist_ok=True)
    with open(canary / f"pid{os.getpid()}.txt", "w") as f:
        f.write("probe check\n")
    seed_everything(0, verbose=False)
    module, data, callbacks, trainer_kw = PHASES[args.phase](args)
    recorder = _recorder()
    callbacks.append(recorder)
    callbacks.append(ModelCheckpoint(dirpath=str(run / "checkpoints"), every_n_train_steps=2, save_top_k=-1))
    trainer = Trainer(
        accelerator="cpu", devices=args.devices, strategy=args.strategy if args.devices > 1 else "auto",
        max_steps=args.steps, limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=1,
        logger=CSVLogger(str(run), name="logs"), callbacks=callbacks, default_root_dir=str(run),
        enable_progress_bar=False, enable_model_summary=False, **trainer_kw,
    )
    trainer.fit(module, datamodule=data)
    install_probe.restore()

    record = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "writes": sorted(set(_WRITES)),
        "params": param_digests(module),
        "params_initial": recorder.initial,
        "indices": recorder.indices,
    }
    if args.phase == "stylegan2ada":
        record["ada"] = {"log": module.ada_log, "p_final": float(module.augment_pipe.p), "p_initial": ADA["augment_p"],
                         "target": ADA["ada_target"], "interval": ADA["ada_interval"], "kimg": ADA["ada_kimg"]}
    ranks = out / "ranks"
    ranks.mkdir(exist_ok=True)
    (ranks / f"rank{trainer.global_rank}.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
