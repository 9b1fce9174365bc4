"""Do two runs of the benchmark agree?

A GAN result that a second run cannot reproduce is not a result. :func:`compare_results` takes the
``results.json`` of two runs of the same protocol judged by the same evaluator (for example one run with
one torch thread and one with two, or two machines) and, per method and metric, puts both means over
seeds with their Student-t 95 % intervals side by side. A row *agrees* when each run's mean lies inside
the other's interval; rows with fewer than two seeds in a run cannot be checked. The criterion is strict
where a run's seeds all gave the same number (often 0 %): its interval has zero width, and only an equal
mean agrees with it. It also counts the seeds whose joint rate came out identical in both runs (both 0 %
counts too; two thread counts do not promise bit-identical training).

``multifeat bench --out A --compare B`` writes ``A/agreement.md`` and ``A/agreement.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from multifeat.bench.forgetting_report import intervals_agree, mean_interval
from multifeat.bench.report import metric_value
from multifeat.errors import ConfigError
from multifeat.utils.files import atomic_write_text

#: (metric name of :data:`multifeat.bench.report.METRICS`, label, scale for display, digits)
COMPARED = (("joint_rate", "joint", 100.0, 1), ("feature_1_rate", None, 100.0, 1), ("feature_2_rate", None, 100.0, 1),
            ("fid", "FID", 1.0, 1))


def load_results(folder: str | os.PathLike) -> dict[str, Any]:
    """``<folder>/results.json`` of a benchmark run; ConfigError naming the file when it is missing or unreadable."""
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise ConfigError(f"no benchmark results at '{path}': run `multifeat bench --out {folder}` first (or name the "
                          "folder that holds results.json)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"benchmark results '{path}' cannot be read: {e}") from e
    for key in ("methods", "features", "config_hash", "evaluator"):
        if key not in data:
            raise ConfigError(f"benchmark results '{path}' lack the key '{key}': not a results.json of `multifeat bench`")
    data["_path"] = str(path)
    return data


def _describe(results: dict[str, Any]) -> dict[str, Any]:
    hw, run = results.get("hardware") or {}, results.get("run") or {}
    return {"path": results.get("_path"), "seeds": results.get("seeds"), "threads": hw.get("torch_threads"),
            "cpu": hw.get("cpu_model"), "command": run.get("command"), "judge": (results.get("evaluator") or {}).get("sha256_16"),
            "protocol_hash": results.get("config_hash")}


def compare_results(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Per method in both runs and per metric of :data:`COMPARED`: both means with their 95 % intervals and
    ``agree``. Refuses (ConfigError) runs of different protocols, features or judges: their numbers do not
    measure the same thing."""
    a, b = _describe(first), _describe(second)
    if a["protocol_hash"] != b["protocol_hash"]:
        raise ConfigError(f"the two runs used different protocols (hash {a['protocol_hash']} in '{a['path']}', "
                          f"{b['protocol_hash']} in '{b['path']}'): only runs of one protocol can be compared")
    if list(first["features"]) != list(second["features"]):
        raise ConfigError(f"the two runs measure different features: {first['features']} and {second['features']}")
    if a["judge"] != b["judge"] or not a["judge"]:
        raise ConfigError(f"the two runs were judged by different evaluators (sha256 {a['judge']} in '{a['path']}', "
                          f"{b['judge']} in '{b['path']}'): rates of two judges are not comparable")
    features = list(first["features"])
    rows = []
    for mid, m1 in first["methods"].items():
        m2 = second["methods"].get(mid)
        if m2 is None:
            continue
        runs1, runs2 = m1.get("runs") or {}, m2.get("runs") or {}
        common = sorted(set(runs1) & set(runs2), key=int)
        identical = sum(metric_value(runs1[s], "joint_rate", features) == metric_value(runs2[s], "joint_rate", features)
                        for s in common)
        for name, label, scale, digits in COMPARED:
            label = label or f"{features[0 if name == 'feature_1_rate' else 1]}"
            cells = []
            for runs in (runs1, runs2):
                vals = [v for v in (metric_value(r, name, features) for r in runs.values()) if v is not None]
                mean, half = mean_interval(vals)
                cells.append({"mean": mean if vals else None, "half_width": half, "n": len(vals)})
            (c1, c2) = cells
            ok = intervals_agree(c1["mean"], c1["half_width"], c2["mean"], c2["half_width"]) if c1["n"] and c2["n"] else None
            rows.append({"method": mid, "key": m1.get("key"), "name": m1.get("name"), "metric": name, "label": label,
                         "scale": scale, "digits": digits, "first": c1, "second": c2, "agree": ok,
                         "seeds_in_common": len(common), "identical_joint_seeds": identical})
    if not rows:
        raise ConfigError(f"the runs in '{a['path']}' and '{b['path']}' share no method")
    checked = [r["agree"] for r in rows if r["agree"] is not None]
    return {"first": a, "second": b, "features": features, "rows": rows,
            "rows_checked": len(checked), "rows_agreeing": sum(checked), "all_agree": bool(checked) and all(checked)}


def _cell(c: dict[str, Any], scale: float, digits: int) -> str:
    if c["mean"] is None:
        return "n/a"
    s = f"{c['mean'] * scale:.{digits}f}"
    return s + ("" if c["half_width"] is None else f" ± {c['half_width'] * scale:.{digits}f}")


def agreement_markdown(cmp: dict[str, Any]) -> str:
    """Markdown report of :func:`compare_results`."""
    a, b = cmp["first"], cmp["second"]

    def who(d):
        return f"`{d['path']}` ({d['threads']} torch thread{'s' if d['threads'] != 1 else ''}, {d['cpu']}, seeds {d['seeds']})"

    lines = [
        "# Agreement of two benchmark runs",
        "",
        f"- run 1: {who(a)}",
        f"- run 2: {who(b)}",
        f"- protocol hash `{a['protocol_hash']}`, judge sha256 `{a['judge']}` (the same for both)",
        "",
        "Means over seeds with the half-width of their Student-t 95 % interval (rates in %). A row agrees when "
        "each run's mean lies inside the other's interval.",
        "",
        f"**{cmp['rows_agreeing']} of {cmp['rows_checked']} rows agree.**",
        "",
        "| method | metric | run 1 | run 2 | agree | seeds with identical joint rate |",
        "|---|---|---:|---:|---|---:|",
    ]
    for r in cmp["rows"]:
        verdict = "–" if r["agree"] is None else ("yes" if r["agree"] else "**no**")
        lines.append(f"| ({r['key']}) {r['name']} | {r['label']} | {_cell(r['first'], r['scale'], r['digits'])} | "
                     f"{_cell(r['second'], r['scale'], r['digits'])} | {verdict} | "
                     f"{r['identical_joint_seeds']} of {r['seeds_in_common']} |")
    return "\n".join(lines) + "\n"


def write_agreement(out: str | os.PathLike, first: dict[str, Any], second_folder: str | os.PathLike) -> dict[str, Any]:
    """Compare the run in ``out`` (its results, ``first``) with the one in ``second_folder``; write
    ``agreement.md`` and ``agreement.json`` into ``out`` (atomically). Returns the comparison."""
    out = Path(out)
    first = {**first, "_path": first.get("_path") or str(out / "results.json")}
    cmp = compare_results(first, load_results(second_folder))
    atomic_write_text(out / "agreement.json", json.dumps(cmp, indent=2) + "\n")
    atomic_write_text(out / "agreement.md", agreement_markdown(cmp))
    cmp["files"] = {"md": str(out / "agreement.md"), "json": str(out / "agreement.json")}
    return cmp


__all__ = ["COMPARED", "agreement_markdown", "compare_results", "load_results", "write_agreement"]
