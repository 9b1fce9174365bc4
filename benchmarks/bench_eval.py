"""Throughput of evaluation and projection: attribute evaluator, FID features and statistics, StyleGAN2
projection.

    python benchmarks/bench_eval.py            # 1024 images, 64 px; projection 50 steps of 8 targets at 32 px
    python benchmarks/bench_eval.py --quick    # 512 images; 20 projection steps
    python benchmarks/bench_eval.py --smoke    # tiny (test suite)
    python benchmarks/bench_eval.py --device cuda

Rows:

* ``evaluator predict_proba``: ``AttributeEvaluator`` (default widths, 64 px) probabilities for
  images in [-1, 1], batch 128, eval mode — the attribute rates of ``multifeat evaluate``;
* ``FID features (evaluator)``: ``EvaluatorFeatures`` through ``extract_features`` (batch 64);
* ``FID features (InceptionV3)``: only when torch-fidelity and its weight file are on disk (skipped
  with a note otherwise: the package downloads weights only when asked (`--download-inception`));
* ``FID from features``: ``fid_from_features`` of two feature sets of that many images (img/s =
  images of both sets / time);
* ``projection``: ``multifeat.mixing.projection.project`` of 8 targets with the pixel-gradient
  distance, space ``w``, noise optimised, on the CPU-sized StyleGAN2 of ``bench_stylegan2.py`` at
  32 px; img/s counts target-steps per second. Skipped with a note when the module is absent.

Times are CPU seconds of this process on the CPU (wall seconds on CUDA).
"""

from __future__ import annotations

import time
import warnings

try:
    from benchmarks import _common as C
except ImportError:  # run as a script
    import _common as C


def timer(device):
    if device.type == "cuda":
        def now():
            C.sync(device)
            return time.perf_counter()
        return now
    return time.process_time


def measure(fn, device) -> float:
    now = timer(device)
    t0 = now()
    fn()
    return now() - t0


def eval_rows(n: int, size: int, device, smoke: bool) -> tuple[list[list], list[str]]:
    import torch

    from multifeat.eval.evaluator import AttributeEvaluator
    from multifeat.eval.features import EvaluatorFeatures, extract_features, select_extractor
    from multifeat.eval.metrics import fid_from_features

    notes = []
    torch.manual_seed(0)
    kw = dict(width=8, max_width=32) if smoke else {}
    ev = AttributeEvaluator(image_size=size, **kw).to(device).eval()
    images = torch.rand(n, 3, size, size) * 2 - 1
    rows = []
    ev.predict_proba(images[: min(n, 16)])  # warm-up
    t = measure(lambda: ev.predict_proba(images, batch_size=128), device)
    rows.append(["evaluator predict_proba", f"{size} px", n, t * 1e3, n / t])
    ext = EvaluatorFeatures(ev)
    feats = {}
    t = measure(lambda: feats.setdefault("a", extract_features(ext, images, batch_size=64)), device)
    rows.append([f"FID features (evaluator, {ext.num_features}-d)", f"{size} px", n, t * 1e3, n / t])
    try:
        inc, name = select_extractor("inception")
    except Exception as e:  # noqa: BLE001 - any reason it is unavailable is reported, not raised
        notes.append(f"InceptionV3 features skipped: {str(e).splitlines()[0]}")
    else:
        inc = inc.to(device)
        m = min(n, 64)
        t = measure(lambda: extract_features(inc, images[:m], batch_size=32), device)
        rows.append([f"FID features ({name})", f"{size} px", m, t * 1e3, m / t])
    fa = feats["a"]
    fb = extract_features(ext, torch.rand(n, 3, size, size) * 2 - 1)
    t = measure(lambda: fid_from_features(fa, fb), torch.device("cpu"))
    rows.append([f"FID from features ({fa.shape[1]}-d)", "-", 2 * n, t * 1e3, 2 * n / t])
    return rows, notes


def projection_rows(device, steps: int, smoke: bool) -> tuple[list[list], list[str]]:
    try:
        from multifeat.mixing.distance import build_distance
        from multifeat.mixing.projection import estimate_w_stats, project
    except ImportError as e:
        return [], [f"projection skipped: multifeat.mixing.projection is not available ({e})"]
    import torch

    from multifeat.nets.stylegan2 import Generator

    torch.manual_seed(0)
    res = 16 if smoke else 32
    cb, cm, zd = (256, 32, 32) if smoke else (4096, 128, 128)
    G = Generator(z_dim=zd, c_dim=0, w_dim=zd, img_resolution=res, img_channels=3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": cb, "channel_max": cm}).to(device).eval().requires_grad_(False)
    n = 2 if smoke else 8
    with torch.no_grad():
        targets = G(torch.randn(n, zd, device=device), None).clamp(-1, 1)
    dist = build_distance("pixel-gradient").to(device)
    stats = estimate_w_stats(G, 256 if smoke else 1000)
    t = measure(lambda: project(G, targets, dist, num_steps=steps, progress=False, w_stats=stats), device)
    return [[f"projection (w, noise, {steps} steps)", f"{res} px", n, t * 1e3, n * steps / t]], []


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__.split("\n\n")[0], device=True)
    args = p.parse_args(argv)
    C.setup_threads(args.threads)
    device = C.pick_device(args.device)
    n = 32 if args.smoke else (512 if args.quick else 1024)
    size = 16 if args.smoke else 64
    steps = 3 if args.smoke else (20 if args.quick else 50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows, notes = eval_rows(n, size, device, args.smoke)
        prow, pnotes = projection_rows(device, steps, args.smoke)
    C.print_header("Evaluation and projection throughput", device=device,
                   notes=[f"device {device}; {'CPU' if device.type == 'cpu' else 'wall'} seconds", *notes, *pnotes])
    print(C.markdown_table(["what", "size", "images", "ms", "img/s"], rows + prow, digits=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
