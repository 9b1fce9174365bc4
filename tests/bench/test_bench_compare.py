"""Agreement of two benchmark runs: hand-worked intervals, refusals, and the command's early check."""

from __future__ import annotations

import json
import math

import pytest

from multifeat.bench.compare import agreement_markdown, compare_results, load_results, write_agreement
from multifeat.errors import ConfigError

T975_2 = 4.302652729911275  # Student-t 97.5 % quantile, 2 degrees of freedom (tables)


def _rec(joint, bald, beard, fid):
    return {"joint": {"rate": joint}, "feature_rates": {"bald": {"rate": bald}, "beard": {"rate": beard}}, "fid": fid}


def _results(joints, judge="aaaa", phash="p1", threads=1, bald=0.5):
    runs = {str(s): _rec(j, bald, 0.4, 50.0 + s) for s, j in enumerate(joints)}
    return {"features": ["bald", "beard"], "config_hash": phash, "seeds": list(range(len(joints))),
            "evaluator": {"sha256_16": judge}, "hardware": {"torch_threads": threads, "cpu_model": "cpu"},
            "methods": {"c-method-a": {"key": "c", "name": "Method A", "runs": runs},
                        "g-joint-gan": {"key": "g", "name": "joint GAN", "runs": {"0": _rec(0.3, 1, 0.3, 40.0)}}},
            "_path": f"/runs/{threads}/results.json"}


def _row(cmp, method, metric):
    (row,) = [r for r in cmp["rows"] if r["method"] == method and r["metric"] == metric]
    return row


def test_means_intervals_and_verdicts_worked_by_hand():
    cmp = compare_results(_results([0.1, 0.2, 0.3]), _results([0.5, 0.5, 0.6], threads=2))
    row = _row(cmp, "c-method-a", "joint_rate")
    # run 1: mean 0.2, sample sd 0.1 -> half-width t * 0.1 / sqrt 3; run 2: mean 0.5333, sd 0.05774
    assert row["first"]["mean"] == pytest.approx(0.2)
    assert row["first"]["half_width"] == pytest.approx(T975_2 * 0.1 / math.sqrt(3), rel=1e-9)
    assert row["second"]["mean"] == pytest.approx(1.6 / 3)
    assert row["second"]["half_width"] == pytest.approx(T975_2 * math.sqrt(1 / 300) / math.sqrt(3), rel=1e-9)
    # 0.333 apart: inside run 1's 0.248? no -> disagree
    assert row["agree"] is False and row["identical_joint_seeds"] == 0
    # equal per-seed feature rates: zero-width intervals, equal means -> agree
    assert _row(cmp, "c-method-a", "feature_1_rate")["agree"] is True
    # one seed: no interval, cannot be checked
    assert _row(cmp, "g-joint-gan", "joint_rate")["agree"] is None
    assert cmp["rows_checked"] == 4 and cmp["rows_agreeing"] == 3 and cmp["all_agree"] is False
    md = agreement_markdown(cmp)
    assert "**3 of 4 rows agree.**" in md and "| (c) Method A | joint | 20.0 ± 24.8 | 53.3 ± 14.3 | **no** |" in md


def test_close_runs_agree_and_identical_seeds_are_counted():
    cmp = compare_results(_results([0.1, 0.2, 0.3]), _results([0.1, 0.25, 0.3], threads=2))
    row = _row(cmp, "c-method-a", "joint_rate")
    assert row["agree"] is True and row["identical_joint_seeds"] == 2 and row["seeds_in_common"] == 3


def test_refuses_runs_that_do_not_measure_the_same_thing():
    with pytest.raises(ConfigError, match="different evaluators.*aaaa.*bbbb"):
        compare_results(_results([0.1, 0.2]), _results([0.1, 0.2], judge="bbbb"))
    with pytest.raises(ConfigError, match="different protocols"):
        compare_results(_results([0.1, 0.2]), _results([0.1, 0.2], phash="p2"))


def test_load_results_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path / "results.json")):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"methods": {}}))
    with pytest.raises(ConfigError, match="lack the key 'features'"):
        load_results(tmp_path)


def test_write_agreement_files(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps(_results([0.1, 0.2, 0.3], threads=2)))
    out = tmp_path / "this"
    out.mkdir()
    cmp = write_agreement(out, _results([0.1, 0.2, 0.3]), other)
    assert cmp["all_agree"] is True
    assert json.loads((out / "agreement.json").read_text())["rows_agreeing"] == 4
    assert "**4 of 4 rows agree.**" in (out / "agreement.md").read_text()


def test_bench_command_checks_the_other_run_before_training(tmp_path, capsys):
    from multifeat.cli import main

    code = main(["bench", "--smoke", "--out", str(tmp_path / "out"), "--compare", str(tmp_path / "missing")])
    assert code == 2
    assert str(tmp_path / "missing" / "results.json") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was trained


def test_bench_command_refuses_a_run_of_another_protocol_before_training(tmp_path, capsys):
    from multifeat.cli import main

    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps(_results([0.1, 0.2], phash="0123456789abcdef")))
    code = main(["bench", "--smoke", "--out", str(tmp_path / "out"), "--compare", str(other)])
    assert code == 2
    assert "another protocol (hash 0123456789abcdef" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
