"""StyleGAN2-ADA training step of the MultiFeat-Synth profile, in ms per step, with and without the
lazy regularisers and the augmentation.

    python benchmarks/speed_stylegan2.py                 # the profile of experiments/stylegan2_synth.yaml
    python benchmarks/speed_stylegan2.py --quick         # fewer steps
    python benchmarks/speed_stylegan2.py --threads 2     # two torch threads (default 1)
    python benchmarks/speed_stylegan2.py --smoke         # tiny networks, seconds (test suite)

The networks, batch and losses are those of ``experiments/stylegan2_synth.yaml`` (read from the file;
``--config`` takes another ``multifeat fit`` config of ``StyleGAN2ADA``). Every variant trains
``StyleGAN2ADA`` through ``lightning.Trainer`` on random images for whole 16-step cycles (R1 runs on
step 0 of each 16, path length — when on — on every 4th) and times each step in CPU seconds of this
process (``time.process_time``; a busy, shared machine changes wall time, much less CPU time). The
first cycle is a warm-up and is not counted. Rows:

* ``main only``: the mean of the steps on which no regulariser ran (G main + D main, EMA, bookkeeping);
* ``R1 step``: the mean of the steps that also ran R1 (its double backward);
* ``path-length step``: the mean of the steps that also ran the path-length term;
* ``mean per step``: the mean over whole cycles, the cost that sets the training time.

Variants: the profile; the profile with the ``bgc`` augmentation at a fixed p = 0.2 (D sees every image
through it, and R1 differentiates through it); the profile with path-length regularisation
(weight 2, every 4 steps, the official default).

The official StyleGAN2-ADA implementation (NVlabs/stylegan2-ada-pytorch) is not installable here: it
builds custom CUDA/C++ extensions and has no CPU package, so this script times only this package's
implementation; ``tests/nets/test_stylegan2_equivalence.py`` checks that the networks compute the same
values as the official ones.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

try:
    from benchmarks import _common as C
except ImportError:  # run as a script
    import _common as C

DEFAULT_CONFIG = C.ROOT / "experiments" / "stylegan2_synth.yaml"


def profile(config: Path, smoke: bool) -> tuple[dict, int]:
    """The model's ``init_args`` and the batch size of a ``multifeat fit`` config of ``StyleGAN2ADA``."""
    import yaml

    from multifeat.errors import ConfigError

    cfg = yaml.safe_load(Path(config).read_text())
    try:
        model, batch = dict(cfg["model"]["init_args"]), int(cfg["data"]["init_args"]["batch_size"])
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{config}: expected model.init_args and data.init_args.batch_size ({e})") from e
    if not str(cfg["model"].get("class_path", "")).endswith("StyleGAN2ADA"):
        raise ConfigError(f"{config}: model.class_path must be multifeat.phases.stylegan2ada.StyleGAN2ADA")
    model["num_fixed"] = 4
    if smoke:
        model.update(image_size=16, z_dim=16, w_dim=16, channel_base=64, channel_max=16)
        batch = 4
    return model, batch


def time_steps(model_kwargs: dict, batch: int, cycles: int) -> dict[str, float]:
    """Train ``1 + cycles`` cycles of 16 steps; mean CPU ms of each kind of step after the first cycle."""
    import torch
    from lightning.pytorch import Callback, Trainer
    from torch.utils.data import DataLoader, TensorDataset

    from multifeat.phases.stylegan2ada import StyleGAN2ADA

    torch.manual_seed(0)
    module = StyleGAN2ADA(**model_kwargs)
    hp = module.hparams
    steps = 16 * (1 + cycles)
    size = int(hp.image_size)
    data = torch.rand(batch * steps, 3, size, size) * 2 - 1
    stamps: list[float] = []

    class Stamps(Callback):
        def on_train_batch_start(self, *args, **kwargs) -> None:
            stamps.append(time.process_time())

        def on_train_batch_end(self, *args, **kwargs) -> None:
            stamps.append(time.process_time())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(accelerator="cpu", devices=1, max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                callbacks=[Stamps()]).fit(module, train_dataloaders=DataLoader(TensorDataset(data), batch_size=batch))
    kinds: dict[str, list[float]] = {"main": [], "r1": [], "pl": [], "all": []}
    for i in range(16, steps):
        ms = (stamps[2 * i + 1] - stamps[2 * i]) * 1e3
        kinds["all"].append(ms)
        r1 = i % int(hp.r1_interval) == 0 and (hp.r1_gamma is None or hp.r1_gamma > 0)
        pl = hp.pl_weight > 0 and i % int(hp.pl_interval) == 0
        kinds["r1" if r1 else "pl" if pl else "main"].append(ms)
    return {k: statistics.mean(v) if v else float("nan") for k, v in kinds.items()}


def variants(model: dict) -> list[tuple[str, dict]]:
    out = [("profile", dict(model))]
    out.append(("profile + augment bgc (p = 0.2 fixed)", {**model, "augment": "bgc", "augment_p": 0.2, "ada_target": None}))
    if not model.get("pl_weight"):
        out.append(("profile + path length (weight 2, every 4)", {**model, "pl_weight": 2.0}))
    return out


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="multifeat fit config of StyleGAN2ADA")
    args = p.parse_args(argv)
    C.setup_threads(args.threads)
    C.quiet_lightning()
    import torch

    model, batch = profile(Path(args.config), args.smoke)
    cycles = 1 if (args.quick or args.smoke) else 3
    rows = []
    for name, kw in variants(model):
        t = time_steps(kw, batch, cycles)
        rows.append([name, batch, t["main"], t["r1"], t["pl"], t["all"], batch / (t["all"] / 1e3)])
    arch = (f"{model['image_size']} px, z = w = {model['z_dim']}, {model.get('mapping_layers', 2)} mapping layers, "
            f"channel_base {model['channel_base']}, channel_max {model['channel_max']}, batch {batch}")
    C.print_header("StyleGAN2-ADA training step (MultiFeat-Synth profile)", notes=[
        f"config: {args.config}{' (smoke: tiny networks)' if args.smoke else ''}; {arch}",
        f"torch threads: {torch.get_num_threads()}; CPU ms per step (process time), mean over {cycles} cycle(s) of 16 "
        "steps after one warm-up cycle; n/a = no step of this kind in the variant"])
    print(C.markdown_table(["variant", "batch", "main only ms", "R1 step ms", "path-length step ms", "mean per step ms",
                            "img/cpu-s"], rows, digits=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
