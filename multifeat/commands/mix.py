"""``multifeat mix``: Method B — project two folders of target images and style-mix them.

Examples::

    multifeat mix --generator ffhq.pkl --a bald/ --b beard/ --out runs/mix --space w+ --preset coarse
    multifeat mix --generator runs/sg2/checkpoints/last.ckpt --a bald/ --b beard/ --out runs/mix2 \\
        --guided --classifier-a runs/demo/phase2/checkpoints/final.ckpt --classifier-b beard_d2.ckpt

The generator may be an official StyleGAN2-ADA pickle, a ``stylegan2ada`` checkpoint or a network
file (:func:`multifeat.mixing.load_stylegan2_generator`). Images are centre-cropped and resized to the
generator's resolution. Without ``--guided`` the layers from ``a`` are a preset (default ``coarse``),
``--cutoff K`` (layers ``0..K-1``) or ``--layers 0-3,6``; with ``--guided`` they are searched per pair
to maximise P(feature a) x P(feature b) of the mix (see ``docs/style_mixing.md``).

Writes into ``--out`` (refused if it already holds results, unless ``--overwrite``):

* ``projections.pt`` — per side ``ws``, noise maps, per-target errors, file names (weights-only loadable);
* ``projected/a/*.png``, ``projected/b/*.png`` — the projected images;
* ``mixes/*.png`` — one image per mix (``NNN_aI_bJ.png``);
* ``grid.png`` — rows: sources a, sources b (projected), mixes;
* ``projections_grid.png`` — rows: targets a, projections a, targets b, projections b;
* ``scores.json`` — distance used, reconstruction errors, the layers of every mix, classifier scores
  (when classifiers are given) and the guided search's choices.

Method B as the paper did it (:func:`multifeat.mixing.targets.mix_projected_targets`): with ``--guided``
and ``--pairing zip``, target ``a_i`` (feature 1 only) is mixed with ``b_i`` (feature 2 only), and the
command also writes ``pairs_grid.png`` (per pair: a target, its projection, b target, its projection,
the mix), ``metrics.json`` and ``report.md`` (PSNR, LPIPS when its weights are on disk, the per-layer
table, and with ``--judge EVALUATOR`` the judged rates with Wilson intervals)::

    multifeat mix --generator runs/stylegan2_synth/checkpoints/last.ckpt --held-out-synthetic 8 --guided \
        --classifier-a bald_d2.ckpt --classifier-b beard_d2.ckpt --judge evaluator.ckpt --perceptual pixel --out runs/mixt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from multifeat.errors import ConfigError, DataError

DESCRIPTION = "Method B: project target images (folders a and b) into a StyleGAN2 generator's style space and mix the styles."
OUTPUT_FILES = ("projections.pt", "grid.png", "projections_grid.png", "scores.json", "metrics.json", "report.md")
#: ``multifeat.mixing.distance.DISTANCE_KINDS`` and its former names (kept here so that building the
#: parser does not import the mixing package; a test keeps them equal).
PERCEPTUAL_CHOICES = ("lpips", "pixel", "vgg16-features", "auto", "lpips-vgg", "pixel-gradient")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="multifeat mix", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--generator", required=True, metavar="PATH", help="official .pkl, stylegan2ada .ckpt or network file")
    p.add_argument("--a", "--bald-targets", dest="a", metavar="DIR", help="target images of feature 1 (e.g. bald faces)")
    p.add_argument("--b", "--beard-targets", dest="b", metavar="DIR", help="target images of feature 2 (e.g. bearded faces)")
    p.add_argument("--held-out-synthetic", type=int, default=None, metavar="N",
                   help="instead of --a/--b: render N SyntheticFaces with feature a only and N with feature b only "
                        "(seed --target-seed, which no training set uses) into OUT/targets/a and OUT/targets/b")
    p.add_argument("--target-seed", type=int, default=30000, help="seed of --held-out-synthetic targets")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.add_argument("--limit", "--pairs", dest="limit", type=int, default=None,
                   help="use at most this many images of each folder (with --pairing zip: this many pairs)")
    g = p.add_argument_group("projection")
    g.add_argument("--space", choices=("w", "w+"), default="w", help="one w for all layers, or one per layer")
    g.add_argument("--steps", type=int, default=1000, help="optimisation steps")
    g.add_argument("--lr", type=float, default=0.1, help="initial learning rate")
    g.add_argument("--w-avg-samples", type=int, default=10_000, help="samples for w_avg and w_std")
    g.add_argument("--no-noise-opt", action="store_true", help="keep the generator's noise maps (optimise w only)")
    g.add_argument("--perceptual", "--distance", dest="perceptual", default="lpips",
                   choices=PERCEPTUAL_CHOICES, metavar="{lpips,pixel,vgg16-features}",
                   help="image distance: lpips (LPIPS on VGG16, as the official projector; needs its weight files, "
                        "an error names any that are missing), pixel (pixel + image-gradient, no weights) or "
                        "vgg16-features (LPIPS without its calibration layers); --distance is the former name")
    g.add_argument("--vgg-weights", metavar="PATH",
                   help="torchvision VGG16 state dict (default: vgg16-397923af.pth in the torch hub cache)")
    g.add_argument("--lpips-weights", metavar="PATH",
                   help="LPIPS linear weights (default: weights/v0.1/vgg.pth of the installed lpips package)")
    m = p.add_argument_group("mixing")
    sel = m.add_mutually_exclusive_group()
    sel.add_argument("--preset", choices=("coarse", "middle", "fine"), help="layers from a (default: coarse)")
    sel.add_argument("--cutoff", type=int, help="layers 0..K-1 from a, the rest from b")
    sel.add_argument("--layers", metavar="SPEC", help="layers from a, e.g. 0-3,6")
    m.add_argument("--pairing", choices=("zip", "all"), default="zip", help="a_i with b_i, or every combination")
    m.add_argument("--noise", choices=("layers", "a", "b", "const"), default="layers",
                   help="noise maps of the mixes: from the source of each layer, from a, from b, or the generator's")
    c = p.add_argument_group("attribute-guided mixing")
    c.add_argument("--guided", action="store_true", help="search the layers that maximise both features")
    c.add_argument("--classifier-a", metavar="CKPT", help="classifier of feature 1 (FeatureClassifier or evaluator checkpoint)")
    c.add_argument("--classifier-b", metavar="CKPT", help="classifier of feature 2")
    c.add_argument("--feature-a", help="attribute name for an evaluator checkpoint (feature 1)")
    c.add_argument("--feature-b", help="attribute name for an evaluator checkpoint (feature 2)")
    c.add_argument("--search", choices=("ranges", "cutoffs"), default="ranges", help="candidate layer sets")
    c.add_argument("--combine", choices=("product", "min", "log"), default="product", help="joint score of p1 and p2")
    c.add_argument("--penalty-weight", type=float, default=0.1, help="weight of the closeness-to-sources penalty")
    c.add_argument("--penalty-space", choices=("image", "w"), default="image", help="where closeness is measured")
    c.add_argument("--refine-steps", type=int, default=0, help="gradient steps on per-layer interpolation weights")
    c.add_argument("--judge", metavar="CKPT",
                   help="attribute evaluator that judges targets, projections and mixes (--feature-a/--feature-b name "
                        "its columns, default bald/beard); with --guided: metrics.json and report.md. Best another "
                        "network than the guiding classifiers")
    c.add_argument("--threshold", type=float, default=0.5, help="probability at which the judge counts a feature present")
    o = p.add_argument_group("run")
    o.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    o.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    o.add_argument("--batch-size", type=int, default=32, help="images drawn at a time")
    o.add_argument("--upscale", type=int, default=1, help="nearest-neighbour enlargement of the grids")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def load_targets(folder: str, size: int, limit: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Images of ``folder`` (recursive) as ``[N, 3, size, size]`` in [-1, 1] and their relative names."""
    from multifeat.data.folder import ImageFolderDataset

    ds = ImageFolderDataset(folder, image_size=size)
    n = len(ds) if limit is None else min(limit, len(ds))
    images = torch.stack([ds[i]["image"] for i in range(n)])
    names = [str(Path(f).relative_to(ds.root)) for f in ds.files[:n]]
    return images, names


def _pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
    width = max(r.shape[0] for r in rows)
    out = []
    for r in rows:
        if r.shape[0] < width:
            r = torch.cat([r, r.new_full((width - r.shape[0], *r.shape[1:]), -1.0)])
        out.append(r)
    return torch.cat(out), width


def _stem(name: str) -> str:
    return Path(name).with_suffix("").as_posix().replace("/", "_")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lightning import seed_everything

    from multifeat.mixing import StyleMixer, load_probability_fn, load_stylegan2_generator
    from multifeat.utils.files import atomic_torch_save, atomic_write_text, ensure_writable_dir
    from multifeat.utils.images import save_grid, save_image

    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.upscale < 1 or args.batch_size < 1:
        raise ConfigError("--upscale and --batch-size must be >= 1")
    if args.guided:
        if args.preset or args.cutoff is not None or args.layers:
            raise ConfigError("--guided searches the layers itself; drop --preset / --cutoff / --layers")
        if not (args.classifier_a and args.classifier_b):
            raise ConfigError("--guided needs --classifier-a and --classifier-b (checkpoints judging feature 1 and 2)")
    elif bool(args.classifier_a) != bool(args.classifier_b):
        raise ConfigError("give both --classifier-a and --classifier-b, or neither")
    if args.held_out_synthetic is not None:
        if args.a or args.b:
            raise ConfigError("--held-out-synthetic renders the targets itself; drop --a / --b")
        if args.held_out_synthetic < 1:
            raise ConfigError(f"--held-out-synthetic must be >= 1, got {args.held_out_synthetic}")
    elif not (args.a and args.b):
        raise ConfigError("give the target folders --a (--bald-targets) and --b (--beard-targets), or --held-out-synthetic N")
    if args.judge and args.pairing != "zip":
        raise ConfigError("--judge pairs targets one to one: use --pairing zip")
    out = Path(args.out)
    existing = [f for f in OUTPUT_FILES if (out / f).exists()]
    if existing and not args.overwrite:
        raise ConfigError(f"'{out}' already holds results ({', '.join(existing)}); choose another --out or pass --overwrite")

    seed_everything(args.seed, verbose=False)
    G = load_stylegan2_generator(args.generator, device=args.device)
    if G.img_channels != 3:
        raise ConfigError(f"the generator draws {G.img_channels}-channel images; folders of RGB images need 3")
    mixer = StyleMixer(G, distance=args.perceptual, vgg_weights=args.vgg_weights, lpips_weights=args.lpips_weights,
                       batch_size=args.batch_size)
    del G
    res = mixer.resolution
    feature_a, feature_b = args.feature_a or "bald", args.feature_b or "beard"
    if args.held_out_synthetic is not None:
        from multifeat.mixing.targets import write_synthetic_targets

        ensure_writable_dir(out)
        for side, feat, other in (("a", feature_a, feature_b), ("b", feature_b, feature_a)):
            write_synthetic_targets(out / "targets" / side, feat, other, args.held_out_synthetic, res, args.target_seed)
        args.a, args.b = str(out / "targets" / "a"), str(out / "targets" / "b")
        print(f"held-out targets: {args.held_out_synthetic} SyntheticFaces with {feature_a} and without {feature_b} "
              f"-> {args.a}, and the reverse -> {args.b} (seed {args.target_seed})")
    targets_a, names_a = load_targets(args.a, res, args.limit)
    targets_b, names_b = load_targets(args.b, res, args.limit)
    from multifeat.mixing.layers import pair_indices

    pair_indices(len(names_a), len(names_b), args.pairing)  # fail early on incompatible counts
    preset = args.preset
    if not args.guided:
        if preset is None and args.cutoff is None and not args.layers:
            preset = "coarse"
        mixer.layers(preset=preset, cutoff=args.cutoff, layers=args.layers)  # fail early on a bad selection
    scorers = None
    if args.classifier_a:
        scorers = (load_probability_fn(args.classifier_a, args.feature_a, args.device),
                   load_probability_fn(args.classifier_b, args.feature_b, args.device))
    ensure_writable_dir(out)
    judges = None
    if args.judge:
        judges = (load_probability_fn(args.judge, feature_a, args.device), load_probability_fn(args.judge, feature_b, args.device))
    print(f"generator: {args.generator} ({res} px, {mixer.num_ws} ws); distance: {mixer.distance.description}")
    from multifeat.mixing.targets import reconstruction_lpips

    lpips = reconstruction_lpips(mixer, args.vgg_weights, args.lpips_weights)
    if lpips[0] is None:
        print(f"reconstruction quality: PSNR only. LPIPS not computed: {lpips[1]}")
    else:
        print("reconstruction quality: PSNR and LPIPS (VGG16)")

    kw = dict(space=args.space, num_steps=args.steps, progress=not args.no_progress,
              w_avg_samples=args.w_avg_samples, initial_learning_rate=args.lr, optimize_noise=not args.no_noise_opt)
    targeted = None
    if args.guided and args.pairing == "zip":
        from multifeat.mixing.targets import mix_projected_targets

        if len(names_a) != len(names_b):
            raise ConfigError(f"--pairing zip needs as many a as b targets; got {len(names_a)} and {len(names_b)} (use --pairs N)")
        targeted = mix_projected_targets(
            mixer, targets_a, targets_b, scorers[0], scorers[1], judge_1=judges[0] if judges else None,
            judge_2=judges[1] if judges else None, features=(feature_a, feature_b), seed=args.seed, search=args.search,
            combine=args.combine, penalty_weight=args.penalty_weight, threshold=args.threshold, lpips=lpips,
            penalty_space=args.penalty_space, refine_steps=args.refine_steps, noise=args.noise, **kw)
        proj_a, proj_b = targeted.proj_a, targeted.proj_b
    else:
        proj_a = mixer.project(targets_a, seed=args.seed, **kw)
        proj_b = mixer.project(targets_b, seed=args.seed, **kw)

    for side, proj, names in (("a", proj_a, names_a), ("b", proj_b, names_b)):
        for i, (img, name) in enumerate(zip(proj.images, names)):
            save_image(img, out / "projected" / side / f"{i:03d}_{_stem(name)}.png")
        mean_mse = sum(e["mse"] for e in proj.errors) / len(proj.errors)
        mean_psnr = sum(e["psnr"] for e in proj.errors) / len(proj.errors)
        mean_d = sum(e["perceptual"] for e in proj.errors) / len(proj.errors)
        print(f"projected {len(names)} image(s) of {side}: mean mse {mean_mse:.4f}, psnr {mean_psnr:.2f} dB, {proj.distance} {mean_d:.4f}")
    payload = {"space": args.space, "generator": str(args.generator), "resolution": res, "num_ws": mixer.num_ws}
    for side, proj, names in (("a", proj_a, names_a), ("b", proj_b, names_b)):
        payload[side] = {**proj.to_dict(), "files": names}
    atomic_torch_save(payload, out / "projections.pt")

    scores: dict = {
        "generator": str(args.generator), "resolution": res, "num_ws": mixer.num_ws, "space": args.space,
        "steps": args.steps, "seed": args.seed, "distance": proj_a.distance, "distance_description": proj_a.distance_description,
        "projection": {side: [{"file": n, **e, "start": s} for n, e, s in zip(names, proj.errors, proj.start_errors)]
                       for side, proj, names in (("a", proj_a, names_a), ("b", proj_b, names_b))},
    }
    if args.guided:
        result = targeted.guided if targeted is not None else mixer.guided_mix(
            proj_a, proj_b, scorers[0], scorers[1], pairing=args.pairing, noise=args.noise, search=args.search,
            combine=args.combine, penalty_weight=args.penalty_weight, penalty_space=args.penalty_space,
            refine_steps=args.refine_steps)
        images = result.images
        ia = torch.tensor([p["index_a"] for p in result.pairs])
        ib = torch.tensor([p["index_b"] for p in result.pairs])
        scores["guided"] = result.to_dict()
        mix_info = {"mode": "guided", "pairing": args.pairing, "noise": args.noise}
        layers_per_mix = [p["layers_from_a"] for p in result.pairs]
    else:
        mixed = mixer.mix(proj_a, proj_b, preset=preset, cutoff=args.cutoff, layers=args.layers,
                          pairing=args.pairing, noise=args.noise)
        images, ia, ib = mixed.images, mixed.index_a, mixed.index_b
        mix_info = {"mode": "preset" if preset else ("cutoff" if args.cutoff is not None else "layers"),
                    "preset": preset, "cutoff": args.cutoff, **mixed.to_dict()}
        layers_per_mix = [mixed.layers_from_a] * images.shape[0]

    mixes = []
    p1 = p2 = None
    if scorers is not None:
        with torch.no_grad():
            p1, p2 = scorers[0](images).flatten().cpu(), scorers[1](images).flatten().cpu()
            for side, proj, fn in (("a", proj_a, scorers), ("b", proj_b, scorers)):
                pa, pb = fn[0](proj.images).flatten().cpu(), fn[1](proj.images).flatten().cpu()
                for row, x, y in zip(scores["projection"][side], pa, pb):
                    row["p_feature_a"], row["p_feature_b"] = float(x), float(y)
    for k in range(images.shape[0]):
        i, j = int(ia[k]), int(ib[k])
        fname = f"{k:03d}_a{i}_b{j}.png"
        save_image(images[k], out / "mixes" / fname)
        row = {"image": f"mixes/{fname}", "index_a": i, "index_b": j, "file_a": names_a[i], "file_b": names_b[j],
               "layers_from_a": layers_per_mix[k]}
        if p1 is not None:
            row.update(p_feature_a=float(p1[k]), p_feature_b=float(p2[k]), joint=float(p1[k] * p2[k]))
        mixes.append(row)
    scores["mix"] = {**mix_info, "mixes": mixes}
    if p1 is not None:
        scores["mix"]["mean_p_feature_a"] = float(p1.mean())
        scores["mix"]["mean_p_feature_b"] = float(p2.mean())
        scores["mix"]["mean_joint"] = float((p1 * p2).mean())

    grid, width = _pad_rows([proj_a.images[ia].cpu(), proj_b.images[ib].cpu(), images.cpu()])
    save_grid(grid, out / "grid.png", nrow=width, upscale=args.upscale)
    pgrid, pwidth = _pad_rows([targets_a, proj_a.images.cpu(), targets_b, proj_b.images.cpu()])
    save_grid(pgrid, out / "projections_grid.png", nrow=pwidth, upscale=args.upscale)
    atomic_write_text(out / "scores.json", json.dumps(scores, indent=2) + "\n")
    if targeted is not None:
        from multifeat.mixing.targets import render_report

        save_grid(targeted.grid_rows(), out / "pairs_grid.png", nrow=5, upscale=args.upscale)
        metrics = {"generator": str(args.generator), "resolution": res, "num_ws": mixer.num_ws,
                   "files_a": names_a, "files_b": names_b, **targeted.to_dict()}
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        atomic_write_text(out / "report.md", render_report(targeted, str(args.generator)))
        if targeted.judged is not None:
            j = targeted.judged["mixes"]["joint"]
            print(f"mixes judged {feature_a} and {feature_b}: {j['count']}/{j['n']} = {100 * j['rate']:.1f} % "
                  f"(95 % CI {100 * j['ci95'][0]:.1f}-{100 * j['ci95'][1]:.1f} %)")
        print(f"wrote pairs_grid.png (rows: {feature_a} target | projection | {feature_b} target | projection | mix), "
              f"metrics.json and report.md to {out}")
    print(f"wrote {images.shape[0]} mix(es), grid.png, projections.pt and scores.json to {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    try:
        sys.exit(main())
    except (ConfigError, DataError) as e:
        print(f"multifeat mix: error: {e}", file=sys.stderr)
        sys.exit(2)
