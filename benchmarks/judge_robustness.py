"""How far the attribute evaluator (the judge of ``multifeat evaluate``) can be trusted on what
generators produce: its accuracy per attribute on clean and degraded faces, and how often it reports
a feature on images that are not faces. Not a speed benchmark: it trains the evaluator the way
``cached_evaluator`` does (SyntheticFaces seed 10 000, width 16, 4096 images) and measures it.

    python benchmarks/judge_robustness.py                      # 32 and 64 px, 600 steps (docs/evaluation.md)
    python benchmarks/judge_robustness.py --baseline           # also an evaluator trained without robustness
    python benchmarks/judge_robustness.py --sizes 32 --steps 300
    python benchmarks/judge_robustness.py --sizes 32 --baseline --g1-steps 300 1024   # + samples of a fresh G1
    python benchmarks/judge_robustness.py --sizes 32 --evaluator shipped --g1-steps 300 1024   # the shipped judge
    python benchmarks/judge_robustness.py --smoke              # tiny, seconds

Rows (one table, all sizes):

* ``clean``, ``blur``, ``noise``, ``downsample``, ``jpeg``, ``checkerboard``, ``colour``: accuracy per
  attribute on ``--n`` held-out SyntheticFaces (seed 31 337) and on their degraded views
  (:func:`~multifeat.eval.judge_data.degraded_view` at ``--strength``; the labels are the faces'),
* ``clean balanced``: balanced accuracy ((TPR + TNR) / 2) on the clean faces,
* ``non-face noise``, ``checkerboard``, ``blobs``, ``smear``: the rate at which each feature is reported on
  ``--n`` images that are not faces (:func:`~multifeat.eval.judge_data.nonface_images`, seed 123;
  smears made from the held-out faces). A trustworthy judge keeps these at or below 5 %;
* ``G1 samples`` (with ``--g1-steps N [M ...]``, the probe): the rate of each feature on ``--n`` samples
  of a fresh Phase-1 G1 trained on bald faces **without beards** with the demo's phase-1 settings
  (``experiments/method_a.yaml``: z 64, G width 16, D width 32 without normalisation, channel cap 128,
  Adam 2e-4, batch 32, 2048 faces; seed ``--g1-seed``, default 7, not the seed of the judge's own
  immature-generator bank), sampled after N (and M, ...) batches of one run. The generator never saw a
  beard, so any beard reported there is the judge's mistake.

* with ``--runs RUN [RUN ...]`` (pipeline run folders, e.g. ``runs/demo``): per run, the rate of each
  feature on ``--n`` samples of its G1 (``phase1/checkpoints/final.ckpt``, or ``last.ckpt`` of an
  unfinished phase 1) and of its G3 (``phase3``), drawn as the pipeline's evaluation draws them (seed 0,
  chunks of 64, chunk i with seed i); on the 36 samples of G3's sample grid before the snapshot
  (``phase3/samples/step_<--g3-grid-step>.png``: G3 trained on bearded faces with hair, so a beard
  should be seen there); and on G1's phase-1 negative bank (``phase1/negatives``). The demo's G1 never
  saw a beard: any beard there is the judge's mistake.

``--evaluator shipped`` measures the judge that ships with the package
(:func:`multifeat.eval.shipped.default_synthetic_evaluator`) instead of training one, ``--evaluator PATH``
an evaluator file.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

try:
    from benchmarks import _common as C
except ImportError:  # run as a script
    import _common as C


def measure(evaluator, size: int, n: int, strength: float) -> list[tuple[str, list[float]]]:
    import torch

    from multifeat.data import SyntheticFaces
    from multifeat.eval.judge_data import (
        NONFACE_KINDS,
        balanced_accuracy,
        degradation_accuracy,
        nonface_images,
    )

    ds = SyntheticFaces(num_samples=n, image_size=size, seed=31_337)
    items = ds.__getitems__(list(range(n)))
    x = torch.stack([it["image"] for it in items])
    y = torch.stack([it["attrs"] for it in items])
    cols = [list(ds.attribute_names).index(a) for a in evaluator.attributes]
    y = y[:, cols]
    rows: list[tuple[str, list[float]]] = []
    acc = degradation_accuracy(evaluator, x, y, strength=strength)
    for kind, per in acc.items():
        rows.append((kind, [100 * per[a] for a in evaluator.attributes]))
    rows.append(("clean balanced", [100 * v for v in balanced_accuracy(evaluator.predict_proba(x), y)]))
    g = torch.Generator().manual_seed(123)
    for kind in NONFACE_KINDS:
        p = evaluator.predict_proba(nonface_images(n, size, kind, g, faces=x))
        rows.append((f"non-face {kind}", [100 * float((p[:, i] >= 0.5).float().mean()) for i in range(p.shape[1])]))
    return rows


def immature_g1_samples(size: int, steps: list[int], n: int, seed: int = 7, out_dir: str | None = None) -> dict:
    """``{N: samples [n,3,S,S]}``: a Phase-1 G1 with the demo's settings, trained on bald, beardless
    SyntheticFaces (seed ``seed``) for ``max(steps)`` batches and sampled (seed 0) after each N of ``steps``.
    With ``out_dir`` the samples (``.pt``) and a grid of each step are kept there, and samples already
    there are reused (a rerun judges the same images)."""
    import lightning as L
    import torch

    from multifeat.data import AttributeDataModule
    from multifeat.phases.phase1 import Phase1GAN

    wanted = sorted(set(int(s) for s in steps))
    samples = {}
    files = {k: Path(out_dir) / f"g1_seed{seed}_{size}px_{k}_n{n}.pt" for k in wanted} if out_dir else {}
    if files and all(f.is_file() for f in files.values()):
        return {k: torch.load(f, weights_only=True) for k, f in files.items()}

    class Snap(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step in wanted and trainer.global_step not in samples:
                samples[trainer.global_step] = module.sample(n, seed=0)

    L.seed_everything(seed, verbose=False)
    g1 = Phase1GAN(image_size=size, z_dim=64, g_width=16, d_width=32, max_width=128, norm_d="none", lr_g=2e-4, lr_d=2e-4)
    dm = AttributeDataModule(image_size=size, require={"bald": True, "beard": False}, num_samples=2048, batch_size=32,
                             val_fraction=0.0, synthetic={"cache": True}, seed=seed)
    trainer = L.Trainer(max_steps=wanted[-1], accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[Snap()])
    trainer.fit(g1, datamodule=dm)
    if out_dir:
        from multifeat.utils.images import save_grid

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for k, x in samples.items():
            save_grid(x[:32], str(Path(out_dir) / f"g1_seed{seed}_{size}px_{k}.png"), upscale=2)
            torch.save(x, files[k])
    return samples


def judge_recipe(path) -> str:
    """The training recipe recorded in an evaluator file, in words (the header's training line is that
    of the judges this script trains)."""
    import torch

    data = torch.load(path, map_location="cpu", weights_only=True)
    recipe, hp = (data.get("multifeat") or {}).get("recipe") or {}, data.get("hyper_parameters") or {}
    return f"recipe {recipe.get('version', '?')}, immature_fraction {hp.get('immature_fraction', '?')}"


def grid_tiles(path: Path, size: int):
    """The images of a sample grid PNG (``save_grid``: 2 px padding, square grid, nearest ``upscale``)
    as ``[N, 3, size, size]`` in [-1, 1]; blank cells are dropped."""
    import numpy as np
    import torch
    from PIL import Image

    a = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1).float().div(127.5).sub(1)
    width = a.shape[-1]
    for up in (1, 2, 3, 4):
        if width % up == 0 and (width // up - 2) % (size + 2) == 0:
            break
    else:
        raise ValueError(f"'{path}' ({width} px wide) is not a grid of {size} px images")
    a = a[:, ::up, ::up]
    cols, rows = (a.shape[2] - 2) // (size + 2), (a.shape[1] - 2) // (size + 2)
    tiles = [a[:, 2 + r * (size + 2): 2 + r * (size + 2) + size, 2 + c * (size + 2): 2 + c * (size + 2) + size]
             for r in range(rows) for c in range(cols)]
    return torch.stack([t for t in tiles if bool((t > -1).any())])


def run_images(run: Path, size: int, n: int, grid_step: int) -> list[tuple[str, object]]:
    """``[(label, images)]`` of one pipeline run folder (see ``--runs``)."""
    from multifeat.eval.evaluate import sample_images
    from multifeat.eval.folders import load_image_folder
    from multifeat.io.checkpoints import load_checkpoint, load_phase_module

    out = []
    for phase, name in (("phase1", "G1"), ("phase3", "G3")):
        folder = run / phase / "checkpoints"
        ckpt = next((folder / f for f in ("final.ckpt", "last.ckpt") if (folder / f).is_file()), None)
        if ckpt is None:
            continue
        gen = load_phase_module(str(ckpt))
        note = "" if ckpt.name == "final.ckpt" else f", unfinished: {ckpt.name} at step {load_checkpoint(ckpt)['global_step']}"
        out.append((f"{run.name} {name} ({n}, seed 0{note})", sample_images(gen.sample, n, seed=0, batch_size=64)))
        if phase == "phase3":
            grid = run / phase / "samples" / f"step_{grid_step:08d}.png"
            if grid.is_file():
                out.append((f"{run.name} G3 grid at step {grid_step} (before the snapshot)", grid_tiles(grid, size)))
    neg = run / "phase1" / "negatives"
    if neg.is_dir():
        out.append((f"{run.name} phase-1 negative bank", load_image_folder(neg, size=size)))
    return out


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="image sizes (default 32 64)")
    p.add_argument("--steps", type=int, default=600, help="training steps per evaluator (default 600)")
    p.add_argument("--n", type=int, default=256, help="held-out faces and non-face images per kind (default 256)")
    p.add_argument("--strength", type=float, default=0.5, help="strength of every degradation, in [0, 1] (default 0.5)")
    p.add_argument("--baseline", action="store_true", help="also train and measure an evaluator without robust training")
    p.add_argument("--g1-steps", type=int, nargs="*", default=[], help="also judge samples of a G1 trained this many "
                   "batches on bald, beardless faces (several: sampled after each, one run; default none)")
    p.add_argument("--g1-seed", type=int, default=7, help="seed of that G1 (default 7)")
    p.add_argument("--g1-cache", metavar="DIR", help="keep the G1 samples (and a grid per step) there; reuse them when present")
    p.add_argument("--runs", nargs="*", default=[], metavar="RUN", help="pipeline run folders whose G1, G3 and negative "
                   "bank to judge (see the module's help)")
    p.add_argument("--g3-grid-step", type=int, default=512, help="the step of G3's sample grid judged as G3 before the "
                   "snapshot (default 512; the demo's snapshot is at 640)")
    p.add_argument("--evaluator", default="train", metavar="train|shipped|PATH",
                   help="train the judge as cached_evaluator does (default), measure the shipped one, or an evaluator file")
    args = p.parse_args(argv)
    C.setup_threads(args.threads)
    if args.smoke:
        args.sizes, args.steps, args.n = [16], 4, 16
        args.g1_steps = [min(s, 2) for s in args.g1_steps]
    C.quiet_lightning()
    from multifeat.eval.evaluator import load_evaluator, train_evaluator
    from multifeat.eval.immature import IMMATURE_STEPS

    variants = {"train": [("robust", True)], "shipped": [("shipped", None)]}.get(args.evaluator, [("file", args.evaluator)])
    variants += [("plain", False)] if args.baseline else []
    from multifeat.eval.evaluator import RECIPE_VERSION

    C.print_header("Attribute evaluator: accuracy (%) on degraded faces, feature rate (%) on non-face images", notes=[
        f"training (of the judges trained here): SyntheticFaces seed 10000, 4096 images, width 16/64, {args.steps} steps, batch 64, recipe "
        f"{RECIPE_VERSION}; "
        f"test: {args.n} faces (seed 31337), degradation strength {args.strength}, {args.n} non-face images per kind (seed 123)",
    ])
    table = []
    names = None
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            t0 = time.perf_counter()
            g1_images = immature_g1_samples(size, args.g1_steps, args.n, args.g1_seed, args.g1_cache) if args.g1_steps else {}
            if g1_images:
                print(f"{size} px G1 (seed {args.g1_seed}, {max(args.g1_steps)} batches): {time.perf_counter() - t0:.0f} s wall")
            for label, robust in variants:
                t0 = time.perf_counter()
                if robust is None:
                    from multifeat.eval.shipped import default_synthetic_evaluator

                    ev, path, digest = default_synthetic_evaluator(size)
                    print(f"{size} px shipped judge: {path} (sha256 {digest}; {judge_recipe(path)})")
                elif isinstance(robust, str):
                    ev = load_evaluator(robust)
                    print(f"{size} px judge from {robust} ({judge_recipe(robust)})")
                else:
                    path = train_evaluator(image_size=size, max_steps=args.steps, out_path=Path(tmp) / f"ev{size}{label}.ckpt",
                                           num_samples=256 if args.smoke else 4096, batch_size=64, width=16, max_width=64,
                                           accelerator="cpu", robust=robust, cache_dir=tmp if args.smoke else None,
                                           immature_steps=(1, 2) if args.smoke else IMMATURE_STEPS)
                    ev = load_evaluator(path)
                seconds = time.perf_counter() - t0
                names = list(ev.attributes)
                for row, values in measure(ev, size, args.n, args.strength):
                    table.append([size, label, row, *values])
                for steps, images in sorted(g1_images.items()):
                    p = ev.predict_proba(images)
                    table.append([size, label, f"G1 samples ({steps} steps, bald, no beard)",
                                  *[100 * float((p[:, i] >= 0.5).float().mean()) for i in range(p.shape[1])]])
                for run in args.runs:
                    for row, images in run_images(Path(run), size, args.n, args.g3_grid_step):
                        p = ev.predict_proba(images)
                        table.append([size, label, f"{row}, n={images.shape[0]}",
                                      *[100 * float((p[:, i] >= 0.5).float().mean()) for i in range(p.shape[1])]])
                print(f"{size} px {label}: {'trained' if isinstance(robust, bool) else 'loaded'} in {seconds:.0f} s wall")
    print()
    print(C.markdown_table(["size", "judge", "images", *names], table, digits=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
