"""Calibrated flags: the threshold admits at most 5% of a method's null-pair findings, ignores planted pairs and
failed runs, and a finding is compared with it only under the reference's method config."""

import json

import numpy as np
import pytest

from diffbench.harness.score.flags import Calibration, null_thresholds, payload
from diffbench.harness.score.scoring import PairResult


def result(method, kind, u, status="ok"):
    return PairResult(method, 0, f"{kind}-{len(u)}", kind, (), status, uniqueness=list(u))


def test_threshold_admits_five_percent_of_null_findings(tmp_path):
    rng = np.random.default_rng(0)
    nulls = [rng.normal(size=37), rng.normal(size=60)]
    results = [result("m", "null", u) for u in nulls]
    results += [result("m", "planted", [100.0] * 50), result("m", "null", [1000.0] * 5, status="failed")]
    th = null_thresholds(results, {"m": "h1"}, {"m": "mean_diff"})["m"]
    pooled = np.concatenate(nulls)
    assert th["n_null_findings"] == len(pooled) and th["n_null_runs"] == 2
    above = (pooled > th["threshold"]).mean()
    assert above <= 0.05 and (pooled >= th["threshold"]).mean() > 0.05 - 1 / len(pooled)
    path = tmp_path / "flag_thresholds.json"
    path.write_text(json.dumps(payload({"m": th}, "smollm2-135m", "quick", tmp_path)))
    cal = Calibration.load(path)
    assert cal.flag("m", "h1", th["threshold"] + 1e-6)[0] is True
    assert cal.flag("m", "h1", th["threshold"])[0] is False
    flag, why = cal.flag("m", "other-config", 1e9)
    assert flag is None and "another config" in why
    flag, why = cal.flag("unknown", "h1", 1e9)
    assert flag is None and "no reference calibration" in why


def test_methods_without_null_findings_have_no_threshold():
    assert null_thresholds([result("m", "planted", [1.0]), result("n", "null", [])], {}, {}) == {}


def test_bad_calibration_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Calibration.load(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="no `thresholds`"):
        Calibration.load(tmp_path / "x.json")
