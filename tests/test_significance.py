"""harness/score/significance.py on constructed hit tables and run folders (no models), and on the committed quick run."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from diffbench.harness.score.calibration import safe_auroc
from diffbench.harness.score.significance import HitTable, auroc, auroc_bootstrap, clopper_pearson, compare_methods, compare_pair, detection, fixed_fa_threshold, holm, load_hit_table, load_pair_scores, mcnemar_exact, mcnemar_power, min_detectable_difference, sign_flip_pvalue, significance_section, units_needed

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "results" / "quick-audit-smollm2-135m"


def table(**hits) -> HitTable:
    n = len(next(iter(hits.values())))
    return HitTable(5, [(f"p{i}", "b") for i in range(n)], {m: np.asarray(v, dtype=float) for m, v in hits.items()})


# ----------------------------------------------------------------------------- paired tests


def test_true_difference_is_significant():
    rng = np.random.default_rng(0)
    n = 40
    a = np.zeros(n)
    a[:30] = 1  # a hits 30 units
    b = np.zeros(n)
    b[:10] = 1  # b hits 10 of the same: 20 discordant units, all for a
    c = (rng.random(n) < 0.5).astype(float)
    rows = {(r.a, r.b): r for r in compare_methods(table(a=a, b=b, c=c), n_boot=2000)}
    r = rows[("a", "b")]
    assert r.diff == pytest.approx(0.5) and r.n_a_only == 20 and r.n_b_only == 0
    assert r.test == "McNemar (exact)"
    assert r.p == pytest.approx(2 * 0.5 ** 20)
    assert r.p_holm <= 3 * r.p and r.significant()
    assert 0 < r.lo <= 0.5 <= r.hi


def test_identical_methods_are_not_significant():
    x = (np.arange(30) % 3 == 0).astype(float)
    (r,) = compare_methods(table(a=x, b=x.copy()), n_boot=500)
    assert r.diff == 0 and r.p == 1 and r.p_holm == 1 and not r.significant()
    assert (r.lo, r.hi) == (0, 0)
    # a small difference on few units is not significant either
    y = x.copy()
    y[1] = 1
    (r,) = compare_methods(table(a=x, b=y), n_boot=500)
    assert (r.a, r.b) == ("b", "a") and r.diff > 0 and not r.significant()


def test_paired_comparison_uses_shared_units_only():
    a = np.array([1, 1, np.nan, 0, 1])
    b = np.array([0, np.nan, 1, 0, 0])
    t = table(a=a, b=b)
    x, y = t.paired("a", "b")
    assert list(x) == [1, 0, 1] and list(y) == [0, 0, 0]
    (r,) = compare_methods(t, n_boot=200)
    assert r.n_units == 3 and r.recall_a == pytest.approx(2 / 3)


def test_sign_flip_matches_mcnemar_on_binary_and_handles_fractions():
    rng = np.random.default_rng(1)
    for _ in range(20):
        d = rng.choice([-1.0, 0.0, 1.0], size=int(rng.integers(1, 15)), p=[0.3, 0.3, 0.4])
        assert sign_flip_pvalue(d) == pytest.approx(mcnemar_exact(int((d > 0).sum()), int((d < 0).sum())))
    assert sign_flip_pvalue(np.ones(5)) == pytest.approx(2 / 32)
    assert sign_flip_pvalue(np.zeros(4)) == 1
    # seeds average to fractions: the sign-flip test; Monte Carlo beyond the exact size agrees with the exact one
    x = np.array([1, 2 / 3, 1, 1 / 3, 1, 1, 2 / 3, 1, 1, 1, 1 / 3, 1])
    r = compare_pair("a", "b", x, np.zeros_like(x), n_boot=200)
    assert r.test == "sign-flip" and r.p == pytest.approx(2 / 2 ** 12)
    d = rng.normal(0.3, 1, size=18)  # beyond EXACT_SIGN_FLIP_MAX: Monte Carlo, close to the full enumeration
    signs = 1 - 2 * ((np.arange(2 ** 18)[:, None] >> np.arange(18)) & 1)
    exact = float(np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-9))
    assert sign_flip_pvalue(d, n_perm=20000) == pytest.approx(exact, abs=0.01)


def test_holm_adjusts_upward_and_is_monotone():
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(2)
    for _ in range(50):
        p = rng.random(int(rng.integers(1, 30))) ** 3
        adj = holm(p)
        assert np.all(adj >= p - 1e-15) and np.all(adj <= 1)
        order = np.argsort(p)
        assert np.all(np.diff(adj[order]) >= -1e-15)  # same order as the raw p-values
    adj = holm([0.01, float("nan"), 0.02])
    assert math.isnan(adj[1]) and adj[0] == pytest.approx(0.02) and adj[2] == pytest.approx(0.02)  # m = 2


# ----------------------------------------------------------------------------- fixed false-alarm rate


def test_fixed_fa_threshold_flags_at_most_the_target_share():
    rng = np.random.default_rng(3)
    for n in (1, 3, 19, 20, 21, 57, 200):
        for _ in range(10):
            null = np.round(rng.normal(size=n), 1)  # rounding makes ties
            for rate in (0.01, 0.05, 0.1, 0.5):
                th = fixed_fa_threshold(null, rate)
                flagged = int(np.sum(null > th.value))
                assert flagged == th.null_flagged <= math.floor(rate * n + 1e-9)
    null = np.arange(20.0)  # 20 distinct nulls: 5% allows 1, 1% none
    th5, th1 = fixed_fa_threshold(null, 0.05), fixed_fa_threshold(null, 0.01)
    assert th5.null_flagged == 1 and th5.value == 18 and th5.realised == pytest.approx(0.05)
    assert th1.null_flagged == 0 and th1.value == 19 and th1.realised == 0
    assert math.isnan(fixed_fa_threshold([], 0.05).value)


def test_detection_counts_planted_above_the_threshold():
    null = np.arange(20.0)
    planted = np.array([25.0, 18.5, 19.0, 3.0])
    d = detection("m", planted, null, rates=(0.01, 0.05), n_boot=500)
    at1, at5 = d.at
    assert at1.detected == 1 and at5.detected == 3  # > 19 and > 18
    assert (at5.lo, at5.hi) == pytest.approx(clopper_pearson(3, 4))
    assert d.auroc == pytest.approx(safe_auroc(np.r_[np.ones(4), np.zeros(20)], np.r_[planted, null]))
    assert d.auroc_lo <= d.auroc <= d.auroc_hi


def test_clopper_pearson_matches_scipy_and_the_beta_formula():
    for k, n in ((0, 3), (2, 3), (3, 3), (7, 9), (40, 100)):
        lo, hi = clopper_pearson(k, n)
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert (lo, hi) == pytest.approx((ci.low, ci.high))
        assert lo == pytest.approx(stats.beta.ppf(0.025, k, n - k + 1) if k else 0.0)
        assert hi == pytest.approx(stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0)
    assert all(math.isnan(x) for x in clopper_pearson(0, 0))


def test_auroc_matches_safe_auroc():
    rng = np.random.default_rng(4)
    for _ in range(20):
        pos, neg = np.round(rng.normal(0.5, 1, 7), 1), np.round(rng.normal(0, 1, 5), 1)
        assert float(auroc(pos, neg)) == pytest.approx(safe_auroc(np.r_[np.ones(7), np.zeros(5)], np.r_[pos, neg]))
    point, lo, hi = auroc_bootstrap(pos, neg, n_boot=300)
    assert lo <= point <= hi


# ----------------------------------------------------------------------------- power


def test_min_detectable_difference_shrinks_with_n():
    mdd = [min_detectable_difference(n, 0.3) for n in (20, 50, 100, 400, 2000)]
    assert all(not math.isnan(m) for m in mdd) and all(a > b for a, b in zip(mdd, mdd[1:]))
    assert math.isnan(min_detectable_difference(3, 0.3))  # no difference is detectable on 3 units
    fixed = [min_detectable_difference(n, 0.3, discordance=0.4) for n in (50, 100, 400)]
    assert all(a > b for a, b in zip(fixed, fixed[1:]))
    # the inverse: units needed for that difference
    assert units_needed(mdd[3], 0.3) == pytest.approx(400, abs=1)


def test_min_detectable_difference_has_the_stated_power():
    n, p = 400, 0.3
    delta = min_detectable_difference(n, p)
    b_only, a_only = (p + delta) * (1 - p), p * (1 - p - delta)  # independent hits, as assumed
    assert mcnemar_power(n, b_only, a_only) == pytest.approx(0.8, abs=0.05)
    assert mcnemar_power(n, 0.1, 0.1) <= 0.05 + 1e-9  # no difference: the exact test's size


# ----------------------------------------------------------------------------- run folders


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def make_run(tmp: Path, n_units: int = 2, with_findings: bool = True) -> Path:
    """A run folder: n_units planted pairs, 2 null pairs; method `good` (seeds 0-3, 3 with the causal test) hits every
    unit on seeds 0-2 except unit 0 on seed 1 (and on seed 3, which has no any-channel figure); `bad` hits nothing,
    failed on unit 1 and is not applicable to unit 0; `floor` is a floor."""
    pairs = [{"id": f"base__p{i}", "kind": "planted", "a": "base", "b": f"p{i}", "behaviors": [f"b{i}"], "side": "b", "cross": False}
             for i in range(n_units)]
    pairs += [{"id": f"base__null@{i}", "kind": "null", "a": "base", "b": f"null@{i}", "behaviors": [], "side": "b", "cross": False}
              for i in range(2)]
    seeds = {"good": [0, 1, 2, 3], "bad": [0], "floor": [0, 1]}
    scores = {"pairs": pairs, "floors": ["floor"], "seeds": seeds, "metrics": {},
              "scoring": {"ks": [1, 5, 20], "strong": {"enabled": True, "max_seeds": 3, "floor_max_seeds": None}}}
    (tmp / "scores.json").write_text(json.dumps(scores))
    pr, matches = [], []
    for m, ss in seeds.items():
        for s in ss:
            for i, p in enumerate(pairs):
                status = "ok"
                if m == "bad" and i == 0:
                    status = "not_applicable"
                if m == "bad" and i == 1:
                    status = "failed"
                pr.append({"method": m, "seed": s, "pair": p["id"], "pair_kind": p["kind"], "behaviors": str(tuple(p["behaviors"])),
                           "status": status})
                top = (2.0 if p["kind"] == "planted" else 1.0) if m == "good" else 0.5 + 0.1 * i
                if status == "ok" and with_findings:
                    d = tmp / "findings" / m
                    d.mkdir(parents=True, exist_ok=True)
                    (d / f"{p['id']}@s{s}.json").write_text(json.dumps({"meta": {}, "findings": [
                        {"id": "f0", "uniqueness": top + 0.01 * s}, {"id": "f1", "uniqueness": top / 2}]}))
                for b in p["behaviors"]:
                    hit = m == "good" and status == "ok" and not (i == 0 and s in (1, 3))
                    for rank in (0, 3, 7):
                        matches.append({"method": m, "seed": s, "pair": p["id"], "pair_kind": p["kind"], "behavior": b, "rank": rank,
                                        "hit": hit and rank == 3})
    _write_csv(tmp / "pair_results.csv", pr)
    _write_csv(tmp / "matches.csv", matches)
    return tmp


def test_hit_table_from_a_run_folder(tmp_path):
    run = make_run(tmp_path, n_units=3)
    t = load_hit_table(run)
    assert t.units == [("base__p0", "b0"), ("base__p1", "b1"), ("base__p2", "b2")]
    assert t.methods == ["good", "bad"]  # floors left out
    assert t.seeds["good"] == [0, 1, 2]  # seed 3 has no causal test, so no any-channel figure
    np.testing.assert_allclose(t.hits["good"], [2 / 3, 1, 1])
    np.testing.assert_allclose(t.hits["bad"], [np.nan, 0, 0])  # not applicable: missing; failed: a miss
    assert math.isnan(load_hit_table(run, failed_as_miss=False).hits["bad"][1])
    assert "floor" in load_hit_table(run, include_floors=True).methods
    assert load_hit_table(run, k=1).hits["good"].sum() == 0  # the hits are at rank 3


def test_pair_scores_from_findings(tmp_path):
    ps = load_pair_scores(make_run(tmp_path))
    assert ps.source.startswith("findings/")
    planted, null = ps.split("good")
    assert planted == pytest.approx([2.015, 2.015]) and null == pytest.approx([1.015, 1.015])  # mean over seeds 0-3
    assert "base__p0" not in ps.scores["bad"]  # not applicable: no score


def test_section_says_when_units_are_too_few(tmp_path):
    lines = significance_section(make_run(tmp_path, n_units=2), n_boot=500)
    text = "\n".join(lines)
    assert "Too few units" in text and "smallest two-sided p" in text
    assert "### Detection at a fixed false-alarm rate" in text and "| good | 2 / 2 | 1.00" in text
    assert "### Power" in text and "detects no difference" in text


def test_section_tabulates_pairs_with_enough_units(tmp_path):
    text = "\n".join(significance_section(make_run(tmp_path, n_units=8, with_findings=False), n_boot=500))
    assert "| method A | method B |" in text and "| good | bad | 7 |" in text
    assert "Not available on this run" in text  # neither runs.csv's top_uniqueness nor findings/: no pair scores


@pytest.mark.skipif(not all((QUICK / f).exists() for f in ("scores.json", "pair_results.csv", "matches.csv")),
                    reason="the committed quick run folder lacks scores.json / pair_results.csv / matches.csv")
def test_section_on_the_committed_quick_run():
    scores = json.loads((QUICK / "scores.json").read_text())
    t = load_hit_table(QUICK, include_floors=True)
    for m in t.methods:  # the hit table's mean is the leaderboard's recall@5
        assert t.recall(m) == pytest.approx(scores["metrics"][m]["recall@5"]["value"])
    lines = significance_section(QUICK, n_boot=1000)
    text = "\n".join(lines)
    assert "## Significance (recall@5" in text and "### Power" in text and f"With {len(t.units)} units" in text
    if len(t.units) <= 5:
        assert "Too few units" in text
    if (QUICK / "findings").is_dir() or "top_uniqueness" in (QUICK / "runs.csv").read_text().split("\n")[0]:
        assert "| logprob_diff |" in text.split("### Detection")[1]


def test_breakdowns_group_units_and_null_kinds(tmp_path):
    """Recall per family / recipe / side over the right units, and null false alarms per null kind, from the metadata
    the score stage writes into scores.json."""
    from diffbench.harness.score.significance import breakdown_section

    run = make_run(tmp_path, n_units=4)
    scores = json.loads((run / "scores.json").read_text())
    assert breakdown_section(run) == []  # an older run folder without the metadata: no section, no crash
    scores["organisms"] = {**{f"p{i}": {"kind": "behavior", "recipe": "broad" if i >= 2 else "lora", "behaviors": [f"b{i}"]} for i in range(4)},
                           "null@0": {"kind": "null_identical", "recipe": "lora", "behaviors": []},
                           "null@1": {"kind": "null_chat", "recipe": "lora", "behaviors": []}}
    scores["behaviors"] = {f"b{i}": {"family": "fam_x" if i % 2 else "fam_y", "side": "a" if i == 3 else "b"} for i in range(4)}
    (run / "scores.json").write_text(json.dumps(scores))
    _write_csv(run / "runs.csv", [{"method": "good", "pair": "base__null@1", "pair_kind": "null", "seed": s, "flagged_a": 0,
                                   "flagged_b": 1 if s == 0 else 0} for s in range(4)])
    text = "\n".join(breakdown_section(run))
    # good: unit 0 hit on 2 of 3 seeds, the others always -> fam_y (units 0, 2): (2/3 + 1) / 2 = 0.83; fam_x (1, 3): 1.00
    assert "| method | fam_x (2) | fam_y (2) |" in text and "| good | 1.00 | 0.83 |" in text
    assert "| method | broad (2) | narrow (2) |" in text and "| good | 1.00 | 0.83 |" in text
    assert "| method | added (side b) (3) | removed (side a) (1) |" in text and "| good | 0.89 | 1.00 |" in text
    # null@1 (null_chat) flagged on 1 of good's 4 seeds; null@0 never
    assert "| method | null_chat (1) | null_identical (1) |" in text and "| good | 0.25 | 0.00 |" in text
