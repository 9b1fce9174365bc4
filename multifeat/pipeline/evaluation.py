"""The evaluation step of the pipeline: ``multifeat evaluate`` on G3 and, as the baseline, on G1,
and same-seed sample grids of every phase in ``eval/grids``.

The evaluation is redone when a checkpoint it evaluated changed (``eval/done.json`` keeps their
SHA-256). The command that evaluates (``multifeat evaluate``'s ``main(argv) -> int``) is handed in
by the caller: the command layer sits above this package.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multifeat.errors import ConfigError, MultifeatError
from multifeat.eval.evaluate import check_evaluator_matches, checkpoint_data_source
from multifeat.io.checkpoints import load_phase_module
from multifeat.pipeline.config import DEFAULT_CLASSES, split_spec
from multifeat.pipeline.layout import DONE, PhaseResult, RunLayout
from multifeat.pipeline.phases import Console, console_from
from multifeat.utils.files import atomic_write_text, ensure_writable_dir, file_sha256
from multifeat.utils.images import save_grid

#: ``main(argv) -> exit code`` of ``multifeat evaluate``
EvaluateMain = Callable[[list[str]], int]

def eval_argv(args: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for k, v in args.items():
        flag = "--" + str(k).replace("_", "-")
        if v is None or v is False:
            continue
        if v is True:
            argv.append(flag)
        elif isinstance(v, (list, tuple)):
            argv += [flag, ",".join(str(x) for x in v)]
        else:
            argv += [flag, str(v)]
    return argv



def phase3_data_source(cfg: dict[str, Any]) -> dict[str, Any]:
    """``{"source", "root"}`` of the phase-3 data in the config (what G3 learns to draw)."""
    _, kw = split_spec((cfg.get("phase3") or {}).get("data"), DEFAULT_CLASSES["phase3"][1], "phase3.data")
    return {"source": str(kw.get("source", "synthetic")), "root": None if kw.get("root") is None else str(kw["root"])}


def check_eval_evaluator(cfg: dict[str, Any]) -> None:
    """Before any training: a given ``eval.args.evaluator`` must exist and have been trained on the data
    the pipeline generates (SyntheticFaces or CelebA); raises ConfigError/CheckpointError otherwise."""
    ev = dict(cfg.get("eval") or {})
    path = (ev.get("args") or {}).get("evaluator")
    if ev.get("enabled", True) is False or not path:
        return
    check_evaluator_matches(checkpoint_data_source(path), phase3_data_source(cfg), str(path),
                            "the pipeline's phase-3 data (phase3.data)")


def eval_runs(cfg: dict[str, Any], layout: RunLayout) -> list[tuple[str, Path, list[str]]]:
    """(phase, output folder, ``multifeat evaluate`` arguments) of each evaluation: G3, then G1 (baseline)."""
    ev = dict(cfg.get("eval") or {})
    args = dict(ev.get("args") or {})
    for key in ("generator", "images", "out", "wandb-name", "wandb_name"):
        if key in args:
            raise ConfigError(f"eval.args.{key} is set by the pipeline; remove it")
    src = phase3_data_source(cfg)
    if "data" not in args:
        args["data"] = src["source"] if src["source"] in ("synthetic", "celeba") else "auto"
    if src["source"] == "celeba" and src["root"] and not any(k in args for k in ("celeba-root", "celeba_root")):
        args["celeba-root"] = src["root"]
    name = cfg.get("name", "method_a")
    wandb = str(cfg.get("logger", "wandb")).lower() == "wandb"
    if wandb:
        args.setdefault("logger", "wandb")
        args.setdefault("wandb-group", (cfg.get("wandb") or {}).get("group", name))
        args.setdefault("wandb-project", (cfg.get("wandb") or {}).get("project", "multifeat"))
    runs = [("phase3", layout.eval, f"{name}/eval")]
    if ev.get("baseline", True):
        runs.append(("phase1", layout.eval / "baseline_phase1", f"{name}/eval-baseline"))
    out = []
    for phase, folder, run_name in runs:
        extra = {"wandb-name": run_name} if wandb and args.get("logger") == "wandb" else {}
        out.append((phase, folder, ["--generator", str(layout.final(phase)), "--out", str(folder), *eval_argv({**args, **extra})]))
    return out


def run_eval(cfg: dict[str, Any], layout: RunLayout, evaluate: EvaluateMain,
             log: Callable[[str], None] | Console | None = None) -> PhaseResult | None:
    """Evaluate G3 (and G1 as the baseline) with ``evaluate`` (``multifeat evaluate``'s ``main``); grids of
    every phase into eval/grids.

    ``eval/done.json`` records the SHA-256 of every evaluated checkpoint: when one changed (a resumed
    phase 3 wrote a new G3), the evaluation runs again instead of reporting the old generator.
    """
    con = console_from(log)
    ev = dict(cfg.get("eval") or {})
    if ev.get("enabled", True) is False:
        con.line("eval: disabled in the config")
        return None
    unknown = set(ev) - {"enabled", "baseline", "args", "grid_n"}
    if unknown:
        raise ConfigError(f"eval: unknown key(s) {sorted(unknown)}; expected enabled, baseline, args, grid_n")
    runs = eval_runs(cfg, layout)
    inputs = {phase: file_sha256(layout.final(phase)) for phase, _, _ in runs if layout.final(phase).is_file()}
    if layout.finished("eval"):
        done = layout.read_done("eval")
        if done.get("inputs") == inputs:
            con.line(f"eval: finished earlier, skipped ({layout.eval / 'report.md'})")
            return PhaseResult("eval", "skipped", done.get("seconds", 0.0), None, None, done.get("metrics", {}),
                               done.get("extra", {}))
        changed = [p for p in inputs if (done.get("inputs") or {}).get(p) != inputs[p]]
        con.line(f"eval: {', '.join(changed) or 'the evaluated'} checkpoint(s) changed since the last evaluation; evaluating again")
    con.line(f"eval: starting -> {layout.eval} (feature rates, joint rate, FID/KID of G3" +
             (" and of G1, the baseline)" if len(runs) > 1 else ")"))
    t0 = time.time()
    grids = write_phase_grids(layout, n=int(ev.get("grid_n", 64)))
    metrics: dict[str, Any] = {}
    for phase, out, argv in runs:
        ensure_writable_dir(out)
        con.detail(f"eval: multifeat evaluate {' '.join(argv)}")
        code = evaluate(argv)
        if code:
            raise MultifeatError(f"evaluation of {phase} failed (exit code {code})")
        try:
            metrics[phase] = json.loads((out / "metrics.json").read_text())
        except (OSError, ValueError):
            metrics[phase] = {}
    seconds = time.time() - t0
    extra = {"grids": grids, "report": str(layout.eval / "report.md"), "metrics_json": str(layout.eval / "metrics.json")}
    atomic_write_text(layout.eval / DONE, json.dumps({"phase": "eval", "seconds": round(seconds, 1), "metrics": metrics,
                                                       "extra": extra, "inputs": inputs}, indent=2, default=str) + "\n")
    con.line(f"eval: finished in {seconds:.1f} s -> {layout.eval / 'report.md'}")
    return PhaseResult("eval", "ran", seconds, None, None, metrics, extra)


def write_phase_grids(layout: RunLayout, n: int = 64, seed: int = 0) -> dict[str, str]:
    """Same-seed sample grids of G1 and G3 (and the D2 check) side by side in ``eval/grids``."""
    d = ensure_writable_dir(layout.eval / "grids")
    out = {}
    for phase in ("phase1", "phase3"):
        if layout.final(phase).is_file():
            module = load_phase_module(layout.final(phase))
            images = module.sample(n, seed=seed).float().cpu()
            path = d / f"{phase}.png"
            save_grid(images, path, upscale=2 if images.shape[-1] <= 64 else 1)
            out[phase] = str(path)
    check = layout.samples("phase2") / "d2_check.png"
    if check.is_file():
        shutil.copyfile(check, d / "phase2_d2_check.png")
        out["phase2"] = str(d / "phase2_d2_check.png")
    return out


__all__ = ["EvaluateMain", "check_eval_evaluator", "eval_argv", "eval_runs", "phase3_data_source", "run_eval",
           "write_phase_grids"]
