"""The pipeline's reports name the judge (file and SHA-256 prefix) and, when G1 never saw feature 2,
report G1's feature-2 rate as the false-positive probe."""

import hashlib
import json

from multifeat.pipeline.layout import PhaseResult, RunLayout
from multifeat.pipeline.summary import false_positive_probe, judge, write_summary


def _metrics(evaluator, beard_rate):
    return {"features": ["bald", "beard"], "n": 64, "evaluator": {"path": str(evaluator)},
            "joint": {"rate": beard_rate, "ci95": [0.0, 0.1]},
            "feature_rates": {"bald": {"rate": 1.0, "ci95": [0.9, 1.0]}, "beard": {"rate": beard_rate, "ci95": [0.01, 0.1]}}}


def _run(tmp_path, beard_images_in_phase1):
    layout = RunLayout(tmp_path / "run")
    layout.phase("phase1").mkdir(parents=True)
    layout.done("phase1").write_text(json.dumps({"joint_free": {
        "features": ["bald", "beard"], "images": 256, "labelled": 256, "joint": 0, "generated": 0,
        "per_feature": {"bald": 256, "beard": beard_images_in_phase1}}}))
    ev = tmp_path / "evaluator.ckpt"
    ev.write_bytes(b"an evaluator's bytes")
    result = PhaseResult("eval", "ran", 1.0, metrics={"phase3": _metrics(ev, 0.02), "phase1": _metrics(ev, 0.03125)})
    return layout, ev, [PhaseResult("phase1", "ran", 1.0), result]


def test_judge_is_named_with_its_hash_and_the_probe_reported(tmp_path):
    layout, ev, results = _run(tmp_path, beard_images_in_phase1=0)
    digest = hashlib.sha256(b"an evaluator's bytes").hexdigest()[:16]
    assert judge(results[1].metrics) == {"path": str(ev), "sha256_16": digest}
    probe = false_positive_probe(results, layout)
    assert probe["feature"] == "beard" and probe["rate"] == 0.03125 and probe["phase1_training_images"] == 256
    md, js = write_summary({"name": "t"}, layout, results, 2.0)
    text = md.read_text()
    assert f"Judge: attribute evaluator `{ev}` (sha256 {digest})." in text
    assert "Feature-2 false-positive probe: G1's beard rate is 3.1 % (95 % CI 1.0-10.0 %)" in text
    data = json.loads(js.read_text())
    assert data["evaluator"]["sha256_16"] == digest and data["feature2_false_positive_probe"]["rate"] == 0.03125


def test_no_probe_when_phase1_saw_feature_2(tmp_path):
    layout, _, results = _run(tmp_path, beard_images_in_phase1=12)
    assert false_positive_probe(results, layout) is None
    md, js = write_summary({"name": "t"}, layout, results, 2.0)
    assert "false-positive probe" not in md.read_text() and json.loads(js.read_text())["feature2_false_positive_probe"] is None
