"""`diffbench evaluate` (harness/evaluate.py) on the tiny suite: a method evaluated against a reference run gets the
same row as in a full run with that method added, and a reference from another protocol or other inputs is refused."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import make_cfg
from omegaconf import OmegaConf

from diffbench.harness import evaluate, pipeline

pytestmark = pytest.mark.usefixtures("one_thread")
OUTSIDE = Path(__file__).parent / "fixtures" / "outside_method.py"
# a tiny random model cannot learn a plant in a test's budget: the gate is opened (T >= 0) so the suite has planted units
# to score; what is tested is that evaluate reproduces a full run's scoring, not the plant
BASE_METHODS = ["method=[mean_diff,random_directions]", "suite.floor_seeds=3", "plant.gate.organism_T_min=0.0", "plant.gate.retries=0"]
WITH_OUTSIDE = [f"plugins=[{OUTSIDE}]", "+method.outside.name=outside_mean_diff"]


def _run(folder: Path, overrides: list[str]) -> Path:
    cfg = make_cfg(folder, overrides)
    OmegaConf.save(cfg, folder / "config.yaml", resolve=True)  # as the command line writes it
    pipeline.run(cfg, folder, ["plant", "collect", "diff", "score", "report"])
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return (_run(tmp_path_factory.mktemp("reference"), BASE_METHODS),
            _run(tmp_path_factory.mktemp("full"), BASE_METHODS + WITH_OUTSIDE))


def test_evaluate_gives_the_row_of_a_full_run(runs, tmp_path):
    ref, full = runs
    out = evaluate.run(str(ref), make_cfg(tmp_path, BASE_METHODS + WITH_OUTSIDE), tmp_path / "eval")
    got = json.loads((out / "scores.json").read_text())
    want = json.loads((full / "scores.json").read_text())
    assert set(got["metrics"]) == {"mean_diff", "random_directions", "outside"}
    strip = lambda m: {k: v for k, v in m.items() if k not in ("_errors",)}
    assert strip(got["metrics"]["outside"]) == strip(want["metrics"]["outside"])
    assert got["metrics"]["mean_diff"] == json.loads((ref / "scores.json").read_text())["metrics"]["mean_diff"]  # reused as published
    board = (out / "leaderboard.md").read_text()
    assert "| outside |" in board and "## Significance" in board
    matches = (out / "matches.csv").read_text()
    assert "outside," in matches and "mean_diff," in matches
    assert (out / "html" / "index.html").exists()


def test_a_reference_from_another_protocol_or_other_inputs_is_refused(runs, tmp_path):
    ref, _ = runs
    for edit, message in ((lambda s: s["protocol"].update(version=-1), "protocol version"),
                          (lambda s: s["protocol"]["pair_inputs"].update({k: "x" for k in s["protocol"]["pair_inputs"]}), "pair inputs")):
        bad = tmp_path / f"bad-{message.split()[0]}"
        shutil.copytree(ref, bad)
        scores = json.loads((bad / "scores.json").read_text())
        edit(scores)
        (bad / "scores.json").write_text(json.dumps(scores))
        with pytest.raises(evaluate.ReferenceMismatch, match=message):
            evaluate.run(str(bad), make_cfg(tmp_path, BASE_METHODS + WITH_OUTSIDE), tmp_path / f"eval-{message.split()[0]}")
    with pytest.raises(ValueError, match="no new method"):
        evaluate.run(str(ref), make_cfg(tmp_path, BASE_METHODS), tmp_path / "eval-nothing")


def test_a_rescore_reuses_the_reference_null_draws_and_gives_its_numbers(runs, tmp_path):
    """scoring.strong.null_from: the causal channel's random-direction null comes from the reference where models,
    prompts, dtype and settings match, every finding is still steered here, and the scores are the reference's."""
    import csv

    # min_change 0: every tested finding could be a strong hit, so the null is drawn (a tiny model's plant does nothing)
    strong = ["scoring.strong.min_change=0.0", "scoring.strong.max_collateral=null"]
    ref = tmp_path / "reference"
    shutil.copytree(runs[0], ref, ignore=shutil.ignore_patterns("strong"))
    pipeline.run(make_cfg(ref, BASE_METHODS + strong + ["scoring.strong.null_from=null"]), ref, ["score"])
    run = tmp_path / "rescore"
    shutil.copytree(ref, run, ignore=shutil.ignore_patterns("strong", "scores.json", "matches.csv"))
    cfg = make_cfg(run, BASE_METHODS + strong + [f"scoring.strong.null_from={ref}"])
    pipeline.run(cfg, run, ["score", "report"])
    got, want = (json.loads((d / "scores.json").read_text()) for d in (run, ref))
    units = sorted(p.name for p in (ref / "strong").glob("*.json"))
    assert all(json.loads((ref / "strong" / u).read_text())["data"]["null"] for u in units)
    assert units and got["strong_null_reused"]["units"] == len(units) and got["strong_null_reused"]["reference"] == ref.name
    assert got["metrics"] == want["metrics"]
    rows = lambda d: [{k: r[k] for k in ("method", "pair", "rank", "strong_steer", "strong_ablate", "strong_p", "strong_match")}
                      for r in csv.DictReader(open(d / "matches.csv"))]
    assert rows(run) == rows(ref)
    for name in units:
        mine, theirs = (json.loads((d / "strong" / name).read_text())["data"] for d in (run, ref))
        assert mine["null"] == theirs["null"] and set(mine["null_from"]) == set(theirs["null"])
        assert mine["deltas"] == theirs["deltas"]  # every finding's own deltas were generated here, and agree
    assert "reused from the reference" in (run / "leaderboard.md").read_text()


def test_null_draws_of_another_dtype_are_refused(runs, tmp_path):
    ref, _ = runs
    bad = tmp_path / "bad-dtype"
    shutil.copytree(ref, bad)
    scores = json.loads((bad / "scores.json").read_text())
    scores["protocol"]["dtype"] = "bfloat16"
    (bad / "scores.json").write_text(json.dumps(scores))
    run = tmp_path / "rescore"
    shutil.copytree(ref, run, ignore=shutil.ignore_patterns("strong"))
    with pytest.raises(ValueError, match="dtype bfloat16"):
        pipeline.run(make_cfg(run, BASE_METHODS + [f"scoring.strong.null_from={bad}"]), run, ["score"])
