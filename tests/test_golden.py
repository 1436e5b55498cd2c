"""The tiny suite's scores are pinned: a refactor that changes any metric or any match record fails here.

`tests/fixtures/tiny_scores.json` was written by this test (DIFFBENCH_UPDATE_GOLDEN=1) before the pipeline,
contract and registry redesign, and must be rewritten only by a change that means to change results (say so in
the commit). Values are rounded to 8 decimals: thread scheduling may move the last bits of a float sum, which
is not a change of result.
"""

import csv
import json
import math
import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "fixtures" / "tiny_scores.json"


def _round(x):
    if isinstance(x, float):
        return None if math.isnan(x) else round(x, 8)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x


def fingerprint(run_dir: Path) -> dict:
    scores = json.loads((run_dir / "scores.json").read_text())
    with open(run_dir / "matches.csv") as fh:
        matches = sorted((dict(r) for r in csv.DictReader(fh)), key=lambda r: tuple(r.values()))
    for r in matches:  # csv holds strings: round the numbers the same way
        for k, v in r.items():
            try:
                r[k] = _round(float(v)) if v not in ("True", "False", "") and not v.isidentifier() else v
            except ValueError:
                pass
    findings = {}  # every method's ranked findings (id, uniqueness, flag): the diff stage's results
    for path in sorted((run_dir / "findings").glob("*/*@s*.json")):
        if path.name.endswith((".status.json", ".metrics.json")):
            continue
        rows = json.loads(path.read_text())["findings"]
        findings[f"{path.parent.name}/{path.stem}"] = [[r["id"], _round(float(r["uniqueness"])), r["flagged"]] for r in rows]
    return {"metrics": _round(scores["metrics"]), "floors": scores["floors"], "seeds": scores["seeds"],
            "methods": scores["methods"], "matches": matches, "findings": findings}


def test_tiny_suite_scores_are_unchanged(tiny_run):
    run_dir, _ = tiny_run
    got = fingerprint(run_dir)
    if os.environ.get("DIFFBENCH_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    for key in ("floors", "seeds", "methods", "findings"):
        assert got[key] == want[key], key
    assert set(got["metrics"]) == set(want["metrics"])
    for method in want["metrics"]:
        assert got["metrics"][method] == want["metrics"][method], method
    assert len(got["matches"]) == len(want["matches"])
    for g, w in zip(got["matches"], want["matches"]):
        assert g == w
