"""The leaderboard's floor check: the protocol's own test that chance cannot reach the planted behaviors."""

from diffbench.harness.report.leaderboard import FLOOR_BOUNDS, floor_check


def _metrics(r1: float | None, r20: float | None) -> dict:
    return {"recall@1": {"value": r1, "lo": 0.0, "hi": 0.1}, "recall@20": {"value": r20, "lo": 0.0, "hi": 0.2}}


def test_floors_within_the_bounds_pass():
    lines, ok = floor_check({"rand": _metrics(0.0, FLOOR_BOUNDS["recall@K"]), "m": _metrics(1.0, 1.0)}, ["rand"], 20)
    assert ok and "Every floor is within the bounds" in lines[0] and "ABOVE" not in lines[0]


def test_a_floor_above_a_bound_is_called_out():
    lines, ok = floor_check({"rand": _metrics(0.0, 0.0), "rand2": _metrics(0.0, 0.15)}, ["rand", "rand2"], 20)
    assert not ok
    assert "recall@20 0.15 [0.00, 0.20] (bound 0.10: ABOVE)" in lines[0] and "does not rank" in lines[0]
    _, ok1 = floor_check({"rand": _metrics(0.06, 0.0)}, ["rand"], 20)
    assert not ok1  # recall@1 has its own, tighter bound


def test_a_floor_without_a_value_is_not_taken_as_passing():
    lines, ok = floor_check({"rand": _metrics(None, None)}, ["rand"], 20)
    assert not ok and "n/a" in lines[0]
    assert floor_check({"m": _metrics(1.0, 1.0)}, [], 20) == ([], True)


def test_a_short_run_states_the_zoo_references_floors(tmp_path, monkeypatch):
    """The quick run's few floor draws come with the zoo reference's pooled estimate beside them; the zoo run itself,
    and a checkout without the reference, add nothing."""
    from diffbench.core.io import write_json
    from diffbench.harness import references
    from diffbench.harness.report.leaderboard import reference_floor_lines

    ref = tmp_path / "zoo-ref"
    ref.mkdir()
    write_json(ref / "scores.json", {"suite": "zoo", "metrics": {
        "random_directions": {**_metrics(0.01, 0.04), "_pooled_draws": 200}, "mean_diff": _metrics(0.5, 0.9)}})
    monkeypatch.setitem(references.REFERENCES, "zoo", str(ref))
    lines = reference_floor_lines({"suite": "quick"}, {"random_directions", "random_dictionary"}, 20)
    assert len(lines) == 2 and "`random_directions` recall@1 0.01" in lines[1] and "recall@20 0.04" in lines[1]
    assert "(200 draws)" in lines[1] and "random_dictionary" not in lines[1] and "mean_diff" not in lines[1]
    assert reference_floor_lines({"suite": "zoo"}, {"random_directions"}, 20) == []
    monkeypatch.setitem(references.REFERENCES, "zoo", str(tmp_path / "absent"))
    assert reference_floor_lines({"suite": "quick"}, {"random_directions"}, 20) == []


def test_the_run_ends_with_the_lead_table(tmp_path):
    from diffbench.harness.report.leaderboard import lead_table

    (tmp_path / "leaderboard.md").write_text("# t\n\ntext\n\n| method | R@5 |\n|---|---|\n| a | 1.00 |\n\n| method | x |\n")
    assert lead_table(tmp_path) == "| method | R@5 |\n|---|---|\n| a | 1.00 |"
    (tmp_path / "leaderboard.md").write_text("# nothing scored\n")
    assert lead_table(tmp_path) == "(no methods scored)"
