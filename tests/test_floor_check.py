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
