"""What a pipeline run reports: ``summary.md`` / ``summary.json`` in the run folder and the result
table printed at the end.

Both name the judge: the attribute evaluator's file and the first 16 hex digits of its SHA-256.
When phase 1's training set holds no image with feature 2 (the joint-free demo: G1 learns bald faces
without beards), G1's feature-2 rate is reported as the **feature-2 false-positive probe**: G1 never
saw feature 2, so the rate at which the judge finds it in G1's samples is a false-positive rate of
the judge on these samples (near 0 for a judge that is not fooled).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from multifeat.eval.evaluate import render_table
from multifeat.pipeline.layout import PhaseResult, RunLayout
from multifeat.utils.files import atomic_write_text, file_sha256


def _rate(m: dict[str, Any], key: str) -> str:
    v = m.get(key)
    if isinstance(v, dict):
        v = v.get("rate", v.get("value"))
    return f"{100 * float(v):.1f} %" if isinstance(v, (int, float)) else "n/a"


def judge(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """``{"path", "sha256_16"}`` of the evaluator named in evaluation metrics (the first phase that names
    one); ``sha256_16`` is None when the file is gone. None when no evaluation names an evaluator."""
    for m in metrics.values():
        path = ((m or {}).get("evaluator") or {}).get("path") if isinstance(m, dict) else None
        if path:
            digest = file_sha256(path)[:16] if Path(path).is_file() else None
            return {"path": str(path), "sha256_16": digest}
    return None


def false_positive_probe(results: list[PhaseResult], layout: RunLayout) -> dict[str, Any] | None:
    """G1's feature-2 rate when phase 1's training set held no feature-2 image, else None.

    Feature 2 is the second feature of the evaluation; phase 1's ``done.json`` holds the count of its
    training images with each ``joint_free`` feature (``joint_free.per_feature``)."""
    ev = next((r for r in results if r.name == "eval"), None)
    g1 = (ev.metrics.get("phase1") if ev else None) or {}
    feats = g1.get("features") or []
    if len(feats) < 2:
        return None
    f2 = feats[1]
    jf = layout.read_done("phase1").get("joint_free") or {}
    seen = (jf.get("per_feature") or {}).get(f2)
    if seen != 0 or not jf.get("labelled"):
        return None
    rate = (g1.get("feature_rates") or {}).get(f2) or {}
    if not isinstance(rate, dict) or "rate" not in rate:
        return None
    return {"feature": f2, "phase1_training_images": jf.get("images"), "phase1_images_with_feature": 0,
            "rate": rate["rate"], "ci95": rate.get("ci95"), "n": g1.get("n")}


def write_summary(cfg: dict[str, Any], layout: RunLayout, results: list[PhaseResult], total_seconds: float) -> tuple[Path, Path]:
    """``summary.md`` and ``summary.json`` in the run folder (atomic); returns their paths."""
    name = cfg.get("name", "method_a")
    ev = next((r for r in results if r.name == "eval"), None)
    the_judge = judge(ev.metrics) if ev else None
    probe = false_positive_probe(results, layout)
    data = {
        "name": name,
        "run_dir": str(layout.root),
        "total_seconds": round(total_seconds, 1),
        "phases": [r.to_dict() for r in results],
        "evaluator": the_judge,
        "feature2_false_positive_probe": probe,
    }
    lines = [f"# Method A run `{name}`", "", f"Run folder: `{layout.root}`; this invocation took {total_seconds:.0f} s.", ""]
    lines += ["| phase | status | time (s) | checkpoint | samples |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.checkpoint or '-'} | {r.samples or '-'} |")
    lines.append("")
    by = {r.name: r for r in results}
    if "phase2" in by:
        d2 = {k: v for k, v in by["phase2"].extra.items() if k.startswith("d2/")}
        if d2:
            lines += ["## D2 (feature classifier)", ""]
            lines += [f"- mean D2 on {k[3:].replace('_mean', '')}: {v:.3f}" for k, v in d2.items()]
            lines.append("")
    if "phase3" in by:
        m = by["phase3"].metrics
        keys = ["d2/fake_mean", "d3/real_mean", "d3/fake_mean", "loss/d3", "loss/g3", "phase3/adain_active"]
        shown = [f"- {k} (last step): {m[k]:.4f}" for k in keys if k in m]
        if shown:
            lines += ["## Phase 3 (last logged values)", "", *shown, ""]
    if ev is not None:
        lines += ["## Evaluation", "", f"Report: `{ev.extra.get('report')}`, numbers: `{ev.extra.get('metrics_json')}`", ""]
        lines += [judge_line(the_judge), ""]
        for phase, m in ev.metrics.items():
            if isinstance(m, dict) and m:
                fid = m.get("fid")
                lines.append(f"- {'G3 (phase 3)' if phase == 'phase3' else 'G1 (phase 1, baseline)'}: joint rate {_rate(m, 'joint')}"
                             + "".join(f", {f} {_rate(m.get('feature_rates', {}), f)}" for f in (m.get("features") or []))
                             + (f", FID {fid:.3g}" if isinstance(fid, (int, float)) else ""))
        if probe is not None:
            lines += ["", probe_line(probe)]
        grids = ev.extra.get("grids") or {}
        if grids:
            lines += ["", "Grids (same noise for G1 and G3): " + ", ".join(f"`{p}`" for p in grids.values())]
        lines.append("")
    md = atomic_write_text(layout.root / "summary.md", "\n".join(lines))
    js = atomic_write_text(layout.root / "summary.json", json.dumps(data, indent=2, default=str) + "\n")
    return md, js


def judge_line(the_judge: dict[str, Any] | None) -> str:
    """One line naming the attribute evaluator (path, SHA-256 prefix)."""
    if not the_judge:
        return "Judge: no attribute evaluator is named in the evaluation results."
    digest = the_judge.get("sha256_16") or "unknown (file no longer present)"
    return f"Judge: attribute evaluator `{the_judge['path']}` (sha256 {digest})."


def probe_line(probe: dict[str, Any]) -> str:
    """The feature-2 false-positive probe as one sentence."""
    ci = probe.get("ci95")
    interval = f" (95 % CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f} %)" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""
    return (f"Feature-2 false-positive probe: G1's {probe['feature']} rate is {100 * float(probe['rate']):.1f} %{interval}. "
            f"None of phase 1's {probe['phase1_training_images']} training images has {probe['feature']}, so every "
            f"{probe['feature']} the judge finds in G1's samples is a false positive (expected near 0).")


def eval_table(results: list[PhaseResult]) -> str | None:
    """The console table of the evaluation (G3, then G1 as the baseline), or None without one."""
    ev = next((r for r in results if r.name == "eval"), None)
    if ev is None:
        return None
    rows = []
    for phase, label in (("phase3", "G3 (phase 3)"), ("phase1", "G1 (baseline)")):
        m = ev.metrics.get(phase)
        if isinstance(m, dict) and m.get("joint") and m.get("feature_rates") and m.get("diversity"):
            rows.append({**m, "label": label})
    try:
        return render_table(rows) if rows else None
    except (KeyError, TypeError):
        return None


__all__ = ["eval_table", "false_positive_probe", "judge", "judge_line", "probe_line", "write_summary"]
