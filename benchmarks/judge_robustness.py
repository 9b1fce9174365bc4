"""How far the attribute evaluator (the judge of ``multifeat evaluate``) can be trusted on what
generators produce: its accuracy per attribute on clean and degraded faces, and how often it reports
a feature on images that are not faces. Not a speed benchmark: it trains the evaluator the way
``cached_evaluator`` does (SyntheticFaces seed 10 000, width 16, 4096 images) and measures it.

    python benchmarks/judge_robustness.py                      # 32 and 64 px, 600 steps (docs/evaluation.md)
    python benchmarks/judge_robustness.py --baseline           # also an evaluator trained without robustness
    python benchmarks/judge_robustness.py --sizes 32 --steps 300
    python benchmarks/judge_robustness.py --sizes 32 --baseline --g1-steps 200   # + immature G1 samples
    python benchmarks/judge_robustness.py --smoke              # tiny, seconds

Rows (one table, all sizes):

* ``clean``, ``blur``, ``noise``, ``downsample``, ``jpeg``, ``checkerboard``, ``colour``: accuracy per
  attribute on ``--n`` held-out SyntheticFaces (seed 31 337) and on their degraded views
  (:func:`~multifeat.eval.judge_data.degraded_view` at ``--strength``; the labels are the faces'),
* ``clean balanced``: balanced accuracy ((TPR + TNR) / 2) on the clean faces,
* ``non-face noise``, ``checkerboard``, ``blobs``, ``smear``: the rate at which each feature is reported on
  ``--n`` images that are not faces (:func:`~multifeat.eval.judge_data.nonface_images`, seed 123;
  smears made from the held-out faces). A trustworthy judge keeps these at or below 5 %;
* ``G1 samples`` (with ``--g1-steps N``): the rate of each feature on ``--n`` samples of a Phase-1 G1
  trained for N steps on bald faces **without beards** (``experiments/phase1.yaml`` settings, batch 32,
  seed 0): immature, smeared faces. Any beard reported there is the judge's mistake.
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
    from multifeat.eval.judge_data import NONFACE_KINDS, balanced_accuracy, degradation_accuracy, nonface_images

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


def immature_g1_samples(size: int, steps: int, n: int):
    """Samples of a Phase-1 G1 trained ``steps`` steps on bald, beardless SyntheticFaces (seed 0)."""
    import lightning as L

    from multifeat.data import AttributeDataModule
    from multifeat.phases.phase1 import Phase1GAN

    L.seed_everything(0, verbose=False)
    g1 = Phase1GAN(image_size=size, z_dim=64, g_width=16, d_width=16, max_width=128, norm_d="none")
    dm = AttributeDataModule(image_size=size, require={"bald": True, "beard": False}, num_samples=2048, batch_size=32,
                             val_fraction=0.0, synthetic={"cache": True}, seed=0)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(g1, datamodule=dm)
    return g1.sample(n, seed=0)


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="image sizes (default 32 64)")
    p.add_argument("--steps", type=int, default=600, help="training steps per evaluator (default 600)")
    p.add_argument("--n", type=int, default=256, help="held-out faces and non-face images per kind (default 256)")
    p.add_argument("--strength", type=float, default=0.5, help="strength of every degradation, in [0, 1] (default 0.5)")
    p.add_argument("--baseline", action="store_true", help="also train and measure an evaluator without robust training")
    p.add_argument("--g1-steps", type=int, default=0, help="also judge samples of a G1 trained this many steps on bald, "
                   "beardless faces (default 0: no)")
    args = p.parse_args(argv)
    C.setup_threads(args.threads)
    if args.smoke:
        args.sizes, args.steps, args.n = [16], 4, 16
        args.g1_steps = min(args.g1_steps, 2)
    C.quiet_lightning()
    from multifeat.eval.evaluator import load_evaluator, train_evaluator

    variants = [("robust", True)] + ([("plain", False)] if args.baseline else [])
    C.print_header("Attribute evaluator: accuracy (%) on degraded faces, feature rate (%) on non-face images", notes=[
        f"training: SyntheticFaces seed 10000, 4096 images, width 16/64, {args.steps} steps, batch 64; "
        f"test: {args.n} faces (seed 31337), degradation strength {args.strength}, {args.n} non-face images per kind (seed 123)",
    ])
    table = []
    names = None
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            g1_images = immature_g1_samples(size, args.g1_steps, args.n) if args.g1_steps > 0 else None
            for label, robust in variants:
                t0 = time.perf_counter()
                path = train_evaluator(image_size=size, max_steps=args.steps, out_path=Path(tmp) / f"ev{size}{label}.ckpt",
                                       num_samples=256 if args.smoke else 4096, batch_size=64, width=16, max_width=64,
                                       accelerator="cpu", robust=robust)
                seconds = time.perf_counter() - t0
                ev = load_evaluator(path)
                names = list(ev.attributes)
                for row, values in measure(ev, size, args.n, args.strength):
                    table.append([size, label, row, *values])
                if g1_images is not None:
                    p = ev.predict_proba(g1_images)
                    table.append([size, label, f"G1 samples ({args.g1_steps} steps, bald, no beard)",
                                  *[100 * float((p[:, i] >= 0.5).float().mean()) for i in range(p.shape[1])]])
                print(f"{size} px {label}: trained in {seconds:.0f} s wall")
    print()
    print(C.markdown_table(["size", "judge", "images", *names], table, digits=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
