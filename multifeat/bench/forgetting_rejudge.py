"""Re-rate a finished forgetting experiment with another judge, without training anything again.

Every judged point of :mod:`multifeat.bench.forgetting` keeps its 128 fixed-noise samples as uint8
tensors (``samples/<run>.pt``), and every seed keeps G1's checkpoint. :func:`rejudge` rates those
stored images with ``judge`` and rewrites, each file atomically:

- ``records/*.json``: every point's feature and joint rates, ``final``, ``evaluator`` and ``g1_rates``
  (``d2_mean`` and everything else is unchanged: it does not depend on the judge);
- ``work/s<seed>/shared.json``: ``g1_rates`` (G1 regenerated from ``phase1/final.ckpt`` on the same noise);
- ``work/s<seed>/<trunk>/trunk.json``: the trunk's points and ``evaluator_sha256``,

so that a later run into the same folder with the new judge resumes instead of refusing the folder.
A record whose stored samples are missing is an error naming the file, and nothing is rewritten
before every record has been rated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from multifeat.errors import DataError
from multifeat.utils.files import atomic_write_text


def _load_samples(out: Path, rels: list[str], where: Path) -> dict[int, torch.Tensor]:
    samples: dict[int, torch.Tensor] = {}
    for rel in rels:
        path = out / rel
        if not path.is_file():
            raise DataError(f"'{where}' names the stored samples '{path}', which do not exist: the points cannot be re-judged")
        samples.update({int(k): v for k, v in torch.load(path, map_location="cpu", weights_only=True).items()})
    return samples


def _rerate(points: list[dict[str, Any]], samples: dict[int, torch.Tensor], judge, where: Path) -> list[dict[str, Any]]:
    new = []
    for p in points:
        if int(p["step"]) not in samples:
            raise DataError(f"'{where}': no stored samples for batch {p['step']}; the points cannot be re-judged")
        rates = {k: round(v, 6) for k, v in judge.rates(samples[int(p["step"])]).items()}
        new.append({**p, **rates})
    return new


def _g1_rates(seed_dir: Path, z: torch.Tensor, judge) -> dict[str, float]:
    from multifeat.bench.forgetting import to_uint8
    from multifeat.phases.phase1 import Phase1GAN

    ckpt = seed_dir / "phase1" / "final.ckpt"
    if not ckpt.is_file():
        raise DataError(f"G1's checkpoint '{ckpt}' is missing: G1's rates cannot be re-judged")
    g1 = Phase1GAN.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    g1.eval()
    with torch.no_grad():
        return judge.rates(to_uint8(g1.generate(z)))


def rejudge(out: str | os.PathLike, judge, z: torch.Tensor, log: Callable[[str], None] = print) -> dict[str, int]:
    """Re-rate every record, trunk and G1 in ``out`` with ``judge`` (a :class:`~multifeat.bench.forgetting.Judge`);
    ``z`` is the experiment's fixed evaluation noise (for G1). Returns the counts of rewritten files."""
    out = Path(out)
    rec_paths = sorted((out / "records").glob("*.json"))
    if not rec_paths:
        raise DataError(f"'{out / 'records'}' holds no records to re-judge")
    writes: list[tuple[Path, dict[str, Any]]] = []
    g1: dict[int, dict[str, float]] = {}
    for marker in sorted((out / "work").glob("s*/shared.json")):
        done = json.loads(marker.read_text())
        seed = int(done["seed"])
        g1[seed] = {k: round(v, 6) for k, v in _g1_rates(marker.parent, z, judge).items()}
        writes.append((marker, {**done, "g1_rates": g1[seed]}))
    for marker in sorted((out / "work").glob("s*/trunk-*/trunk.json")):
        done = json.loads(marker.read_text())
        samples = _load_samples(out, [done["samples"]], marker)
        writes.append((marker, {**done, "points": _rerate(done["points"], samples, judge, marker),
                                "evaluator_sha256": judge.sha256}))
    for path in rec_paths:
        rec = json.loads(path.read_text())
        points = _rerate(rec["points"], _load_samples(out, list(rec["samples"]), path), judge, path)
        new = {**rec, "points": points, "final": points[-1], "evaluator": judge.info(),
               "g1_rates": g1.get(int(rec["seed"]), rec.get("g1_rates"))}
        writes.append((path, new))
    for path, data in writes:  # every file rated before any is rewritten
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    counts = {"records": len(rec_paths), "trunks": sum(1 for p, _ in writes if p.name == "trunk.json"), "g1": len(g1)}
    log(f"[forgetting] re-judged {counts['records']} records, {counts['trunks']} trunks and {counts['g1']} G1s in "
        f"{out} with {judge.path} (sha256 {judge.sha256[:16]})")
    return counts


__all__ = ["rejudge"]
