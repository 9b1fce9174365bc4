"""``multifeat evaluate``: do the requested features appear together, and at what quality?

Examples::

    multifeat evaluate --generator runs/a/phase3/checkpoints/last.ckpt --features bald,beard --out runs/a/eval
    multifeat evaluate --images samples/ --features bald,beard --evaluator evaluator.ckpt --real synthetic
    multifeat evaluate --generator g.ckpt --restore gpen --restore-weights gpen.pth --out runs/a/eval

Writes ``metrics.json``, ``report.md`` and ``samples.png`` into ``--out`` (with ``--restore`` also
``--out/restored/`` and a side-by-side table in the top report). See ``docs/evaluation.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from multifeat.errors import ConfigError

DESCRIPTION = "Measure per-feature rates, the joint rate (all requested features at once), FID/KID and diversity."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="multifeat evaluate", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--generator", metavar="PATH", help="generator checkpoint of any multifeat phase (has sample(n, seed))")
    src.add_argument("--images", metavar="DIR", help="folder of PNG/JPG images to evaluate instead of a generator")
    p.add_argument("--features", default="bald,beard", help="comma-separated requested features")
    p.add_argument("--n", type=int, default=256, help="number of images to generate (or the first N of --images)")
    p.add_argument("--evaluator", metavar="PATH", help="attribute evaluator checkpoint; default: for SyntheticFaces the "
                   "evaluator the package ships for the image size (multifeat/eval/weights), else one trained on the "
                   "generator's data (cached). One trained on other data than the images is refused")
    p.add_argument("--data", default="auto", choices=("auto", "synthetic", "celeba"),
                   help="what the images show: auto = the data the generator was trained on (read from its checkpoint; "
                   "SyntheticFaces for --images); the evaluator must have been trained on the same")
    p.add_argument("--celeba-root", metavar="DIR", help="CelebA copy to train the CelebA evaluator on (default: the "
                   "generator's training root)")
    p.add_argument("--train-evaluator", action="store_true", help="for SyntheticFaces, train (and cache) an evaluator "
                   "instead of using the one the package ships for the image size")
    p.add_argument("--evaluator-steps", type=int, default=None,
                   help="training steps when an evaluator must be trained (default: 400 on SyntheticFaces, 2800 on "
                   "CelebA, the recipe of experiments/celeba_cpu/evaluator.yaml)")
    p.add_argument("--cache-dir", metavar="DIR", help="where trained evaluators are cached (default $MULTIFEAT_CACHE/evaluators "
                   "or ~/.cache/multifeat/evaluators)")
    p.add_argument("--real", default="auto", metavar="auto|synthetic|DIR|none",
                   help="real images of the target combination: SyntheticFaces that carry all features, a folder, or none; "
                   "auto: synthetic for SyntheticFaces data, none (no FID/KID) for CelebA")
    p.add_argument("--n-real", type=int, default=None, help="number of real images (default: --n)")
    p.add_argument("--real-seed", type=int, default=None, help="seed of the synthetic real images (default 20000)")
    p.add_argument("--extractor", default="auto", choices=("auto", "inception", "evaluator"),
                   help="FID/KID features: InceptionV3 when its weights are local (auto), or the evaluator's embedding")
    p.add_argument("--inception-weights", metavar="PATH", help="torch-fidelity InceptionV3 weight file (default: the torch hub cache)")
    p.add_argument("--download-inception", action="store_true",
                   help="let torch-fidelity download the InceptionV3 weights into the torch hub cache when missing (needs internet)")
    p.add_argument("--restore", default="none", help="face restorer applied to the samples (gpen|none); both sets are evaluated")
    p.add_argument("--restore-weights", metavar="PATH", help="weights of the restorer")
    p.add_argument("--out", default="runs/eval", metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (chunk i of the samples uses seed + i)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--threshold", type=float, default=0.5, help="probability at which a feature counts as present")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--logger", default="none", choices=("wandb", "csv", "none"))
    p.add_argument("--wandb-project", default="multifeat")
    p.add_argument("--wandb-group", default=None)
    p.add_argument("--wandb-name", default=None, help="name of the W&B run (default: W&B picks one)")
    return p


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device '{name}' is not a device name; expected auto, cpu or cuda[:i]") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return dev


def _power_of_two_size(size: int) -> int:
    return int(min(256, max(16, 2 ** round(math.log2(max(1, size))))))


def _build_restorer(name: str, weights: str | None, device: torch.device):
    try:
        from multifeat.restore import build_restorer
    except ImportError as e:
        raise ConfigError(f"--restore {name}: face restoration is not available in this build ({e})") from e
    restorer = build_restorer(name, weights, device=device)
    if isinstance(restorer, torch.nn.Module):
        restorer = restorer.eval()
    return restorer



def _steps(args) -> dict[str, int]:
    """``max_steps`` for a judge that must be trained: ``--evaluator-steps`` when given, else the cache's default."""
    return {} if args.evaluator_steps is None else {"max_steps": int(args.evaluator_steps)}

def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed by argparse
        return e.code if isinstance(e.code, int) else 2
    from multifeat.eval.evaluate import (
        DEFAULT_REAL_SEED,
        check_evaluator_matches,
        check_features,
        checkpoint_data_source,
        describe_source,
        evaluate_images,
        log_result,
        render_table,
        sample_images,
        synthetic_real_images,
        write_outputs,
    )
    from multifeat.eval.evaluator import DEFAULT_ATTRIBUTES, load_evaluator
    from multifeat.eval.evaluator_cache import cached_celeba_evaluator, cached_evaluator
    from multifeat.eval.features import find_inception_weights, select_extractor
    from multifeat.eval.folders import list_images, load_image_folder
    from multifeat.utils.files import ensure_writable_dir

    if args.n < 2:
        raise ConfigError(f"--n must be at least 2, got {args.n}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    if args.restore not in ("none", "") and args.restore_weights is not None and not Path(args.restore_weights).exists():
        raise ConfigError(f"--restore-weights '{args.restore_weights}' does not exist")
    device = _device(args.device)
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    restoring = args.restore not in ("none", "")
    restorer = _build_restorer(args.restore, args.restore_weights, device) if restoring else None  # fail early

    # cheap checks first, so a bad path fails before any sampling or training
    ensure_writable_dir(args.out)
    if args.inception_weights is not None or (args.extractor == "inception" and not args.download_inception):
        find_inception_weights(args.inception_weights)
        if args.extractor == "inception":
            select_extractor("inception", inception_weights=args.inception_weights)
    if args.real not in ("auto", "synthetic", "none"):
        list_images(args.real)
    if args.images:
        list_images(args.images)

    # what the images show: the generator's training data, or what --data says
    if args.data != "auto":
        data_src = {"source": args.data, "root": args.celeba_root}
    elif args.generator:
        data_src = checkpoint_data_source(args.generator)
        if data_src is None:
            print(f"note: '{args.generator}' does not record its training data; assuming SyntheticFaces "
                  "(pass --data celeba for CelebA faces)")
            data_src = {"source": "synthetic", "root": None}
    else:
        data_src = {"source": "synthetic", "root": None}
    if data_src["source"] == "celeba" and args.celeba_root:
        data_src = {**data_src, "root": args.celeba_root}
    if data_src["source"] == "folder":
        raise ConfigError(f"'{args.generator}' was trained on {describe_source(data_src)}; no evaluator can be trained "
                          "for it here: pass --evaluator (one trained on the same kind of images) and --data")
    what = f"generator '{args.generator}'" if args.generator else f"image folder '{args.images}' (--data {data_src['source']})"

    # the evaluator before the images when given, so a bad feature name or data fails before any sampling
    evaluator = None
    if args.evaluator:
        evaluator = load_evaluator(args.evaluator)
        ev_src = checkpoint_data_source(args.evaluator)
        if ev_src is None:
            print(f"note: evaluator '{args.evaluator}' does not record its training data; cannot check that it "
                  f"matches {describe_source(data_src)}")
        check_evaluator_matches(ev_src, data_src, args.evaluator, what)
        check_features(features, evaluator.attributes)
    else:
        check_features(features, DEFAULT_ATTRIBUTES)
    real_choice = args.real
    if real_choice == "auto":
        real_choice = "synthetic" if data_src["source"] == "synthetic" else "none"
        if real_choice == "none":
            print(f"no real reference images for {describe_source(data_src)}: FID/KID are skipped "
                  "(give --real DIR with faces that carry all features)")
    elif real_choice == "synthetic" and data_src["source"] != "synthetic":
        raise ConfigError(f"--real synthetic compares {describe_source(data_src)} images with cartoon SyntheticFaces; "
                          "give --real DIR with real faces that carry all features, or --real none")

    # images to evaluate
    if args.generator:
        from multifeat.io.checkpoints import load_phase_module

        gen = load_phase_module(args.generator).to(device)
        if not callable(getattr(gen, "sample", None)):
            raise ConfigError(f"checkpoint '{args.generator}' holds a {type(gen).__name__}, which cannot sample images")
        print(f"sampling {args.n} images from {args.generator} (seed {args.seed})")
        images = sample_images(gen.sample, args.n, seed=args.seed, batch_size=args.batch_size)
        source = f"generator {args.generator}"
    else:
        images = load_image_folder(args.images, limit=args.n)
        if images.shape[0] < 2:
            raise ConfigError(f"image folder '{args.images}' holds {images.shape[0]} image; at least 2 are needed")
        source = f"folder {args.images}"
    image_size = int(images.shape[-1])

    if evaluator is None and data_src["source"] == "celeba":
        if not data_src.get("root"):
            raise ConfigError(f"{what} shows CelebA faces but no CelebA folder is known to train the evaluator on; "
                              "give --celeba-root DIR (or --evaluator PATH)")
        evaluator, path = cached_celeba_evaluator(data_src["root"], _power_of_two_size(image_size), DEFAULT_ATTRIBUTES,
                                                  cache_dir=args.cache_dir, **_steps(args))
        print(f"evaluator (CelebA): {path}")
    elif evaluator is None:
        evaluator, path = cached_evaluator(_power_of_two_size(image_size), DEFAULT_ATTRIBUTES, cache_dir=args.cache_dir,
                                           use_shipped=not args.train_evaluator, **_steps(args))
        print(f"evaluator (SyntheticFaces): {path}")
    evaluator = evaluator.to(device).eval()

    # real images of the target combination
    n_real = args.n_real or args.n
    real_seed = DEFAULT_REAL_SEED if args.real_seed is None else args.real_seed
    if real_choice == "none":
        real, real_source = None, None
    elif real_choice == "synthetic":
        real = synthetic_real_images(features, n_real, _power_of_two_size(image_size), seed=real_seed)
        real_source = f"SyntheticFaces with {'+'.join(features)}, seed {real_seed}"
    else:
        real = load_image_folder(args.real, size=image_size, limit=n_real)
        real_source = f"folder {args.real}"

    common = dict(features=features, evaluator=evaluator, real_images=real, extractor=args.extractor,
                  inception_weights=args.inception_weights, allow_download=args.download_inception, threshold=args.threshold, batch_size=args.batch_size,
                  kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size, seed=args.seed)
    extra = {"source": source, "real_source": real_source, "data_source": data_src}
    out = Path(args.out)
    results = [evaluate_images(images, label="raw" if restoring else "generated", extra=extra, **common)]
    sets = [images]
    if restoring:
        with torch.no_grad():
            restored = torch.cat([restorer(images[i : i + args.batch_size].to(device)).float().cpu()
                                  for i in range(0, images.shape[0], args.batch_size)])
        results.append(evaluate_images(restored, label=f"restored-{args.restore}", extra=extra, **common))
        sets.append(restored)

    files = write_outputs(results[0], sets[0], out, compare=results[1:])
    if restoring:
        files_restored = write_outputs(results[1], sets[1], out / "restored", compare=results[:1])
        files = {**files, **{f"restored_{k}": v for k, v in files_restored.items()}}

    if args.logger != "none":
        from multifeat.loggers import build_logger

        kw = ({"project": args.wandb_project, "group": args.wandb_group, "job_type": "eval", "name": args.wandb_name}
              if args.logger == "wandb" else {})
        logger = build_logger(args.logger, save_dir=str(out), **kw)
        log_result(results, logger)
        if args.logger == "wandb":
            logger.experiment.finish()

    ev = results[0]["evaluator"]
    print()
    print(render_table(results))
    print()
    print(f"feature extractor for FID/KID: {results[0]['extractor']}")
    acc = ev.get("val_accuracy") or {}
    if acc:
        print("evaluator validation accuracy: " + ", ".join(f"{a} {100 * v:.1f}%" for a, v in acc.items()))
    print("wrote: " + ", ".join(files.values()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    from multifeat.cli import main as cli_main

    sys.exit(cli_main(["evaluate", *sys.argv[1:]]))
