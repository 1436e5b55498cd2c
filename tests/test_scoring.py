"""Scoring on synthetic findings whose correct answers are known by construction."""

import math

import numpy as np
import pytest
import torch

from diffbench.harness.score.config import ScoringConfig
from diffbench.harness.score.scoring import Keywords, MatchRecord, PairResult, ProbeActs, compute_metrics, match_finding, per_prompt_scores, probe_null, safe_auroc
from diffbench.core.activations import LayerActs
from diffbench.core import Finding, Readout

D, N_T, N_C, LEN = 16, 20, 20, 6
CFG = ScoringConfig(bootstrap=200)


def probe_pair(seed=0):
    """Model A and B activations on T+C prompts. Dimension 0: a feature planted in B on T prompts.
    Dimension 1: a pre-existing feature, present on T prompts in both models."""
    g = torch.Generator().manual_seed(seed)
    n = N_T + N_C
    text_idx = torch.arange(n).repeat_interleave(LEN)
    pos = torch.arange(LEN).repeat(n)
    a = torch.randn(n * LEN, D, generator=g)
    is_t = text_idx < N_T
    a[is_t & (pos == 3), 1] += 6.0  # pre-existing: both models
    b = a.clone() + 0.05 * torch.randn(n * LEN, D, generator=g)
    b[is_t & (pos == 4), 0] += 6.0  # planted: B only
    labels = np.array([1] * N_T + [0] * N_C)
    start = torch.zeros(n, dtype=torch.long)
    mk = lambda x: ProbeActs(LayerActs(x, text_idx, pos, torch.zeros_like(pos)), labels, start)
    return mk(a), mk(b)


def unit(i):
    v = torch.zeros(D)
    v[i] = 1
    return v


def mf(f, pa, pb, kw):
    """(AUROC, control AUROC, activation match, token match) under the calibrated rule."""
    null = probe_null(pa, lambda side, layer: pa if side == "a" else pb, CFG)
    act, tok = match_finding(f, pa, pb, Keywords(frozenset(kw)), CFG, null)
    return act.auroc, act.control, act.match, tok


def finding(readout, token_ids=(), flagged=True, u=1.0, fid="f"):
    return Finding(id=fid, uniqueness=u, flagged=flagged, readout=readout, token_ids=list(token_ids))


def test_perfect_finding_is_an_activation_hit():
    pa, pb = probe_pair()
    f = finding(Readout(0, 0, w_b=unit(0)))
    auroc, ctrl, act, tok = mf(f, pa, pb, set())
    assert auroc > 0.95 and ctrl < 0.65 and act and not tok


def test_preexisting_feature_is_not_a_hit():
    pa, pb = probe_pair()
    f = finding(Readout(0, 0, w_b=unit(1)))  # separates T/C, but model A does too
    auroc, ctrl, act, tok = mf(f, pa, pb, set())
    assert auroc > 0.95 and ctrl > 0.95 and not act


def test_difference_readout_of_preexisting_feature_does_not_separate():
    pa, pb = probe_pair()
    f = finding(Readout(0, 0, w_a=-unit(1), w_b=unit(1)))
    auroc, _, act, _ = mf(f, pa, pb, set())
    assert not act and auroc < 0.85


def test_token_only_hit():
    pa, pb = probe_pair()
    f = finding(Readout(0, 0, w_b=unit(7)), token_ids=[5, 42, 9])
    _, _, act, tok = mf(f, pa, pb, {42})
    assert tok and not act
    # beyond the top-20 tokens it does not count
    f2 = finding(Readout(0, 0, w_b=unit(7)), token_ids=list(range(100, 120)) + [42])
    assert not mf(f2, pa, pb, {42})[3]


def test_constant_readout_gives_auroc_half():
    pa, pb = probe_pair()
    f = finding(Readout(0, 0, bias=3.0))
    auroc, ctrl, act, _ = mf(f, pa, pb, set())
    assert auroc == 0.5 and ctrl == 0.5 and not act
    assert safe_auroc(np.array([1, 0]), np.array([np.nan, np.nan])) == 0.5


def test_per_prompt_max_ignores_tokens_before_start():
    pa, _ = probe_pair()
    scores = torch.zeros(len(pa.acts.pos))
    scores[pa.acts.pos == 0] = 100.0
    assert per_prompt_scores(scores, pa).max() == 100.0
    shifted = ProbeActs(pa.acts, pa.labels, torch.ones_like(pa.start))
    assert per_prompt_scores(scores, shifted).max() == 0.0


# ----------------------------------------------------------------------------- metrics


def rec(method, pair, kind, behavior, rank, hit, flagged=True, u=1.0, seed=0):
    return MatchRecord(method, seed, pair, kind, behavior, rank, f"f{rank}", u, flagged, 0.9 if hit else 0.5, 0.5, hit, False)


def res(method, pair, kind, behaviors, uniq, flags, status="ok", seed=0):
    return PairResult(method, seed, pair, kind, tuple(behaviors), status, n_findings=len(uniq), n_flagged=sum(flags),
                      uniqueness=list(uniq), flagged=list(flags))


def toy_results():
    """Method m: planted pair p1 (behavior x) hit at rank 0, p2 (behavior y) hit at rank 3; p1's rank-1 flag is false.
    Null pair n1 has 2 flagged findings, n2 none. Analog pair g1 has a flagged finding matching its shared behavior."""
    results = [
        res("m", "p1", "planted", ["x"], [0.9, 0.8, 0.1, 0.05], [True, True, False, False]),
        res("m", "p2", "planted", ["y"], [0.7, 0.6, 0.5, 0.95], [False, False, False, True]),
        res("m", "n1", "null", [], [0.85, 0.3], [True, True]),
        res("m", "n2", "null", [], [0.2, 0.1], [False, False]),
        res("m", "g1", "analog", ["x"], [0.9], [True]),
    ]
    records = [rec("m", "p1", "planted", "x", r, hit=(r == 0), flagged=results[0].flagged[r], u=results[0].uniqueness[r]) for r in range(4)]
    records += [rec("m", "p2", "planted", "y", r, hit=(r == 3), flagged=results[1].flagged[r], u=results[1].uniqueness[r]) for r in range(4)]
    records += [rec("m", "g1", "analog", "x", 0, hit=True)]
    return results, records


def test_metrics_known_by_construction():
    results, records = toy_results()
    m = compute_metrics(results, records, CFG)["m"]
    assert m["recall@1"]["value"] == 0.5
    assert m["recall@5"]["value"] == 1.0
    assert m["precision@1"]["value"] == 0.5  # p1 rank0 hit, p2 rank0 miss
    assert m["precision@5"]["value"] == pytest.approx((1 / 4 + 1 / 4) / 2)
    assert m["fdr"]["value"] == pytest.approx(1 / 3)  # 3 flags on planted pairs, 2 true (p1 r0, p2 r3)
    assert m["null_flagged_per_pair"]["value"] == 1.0
    assert m["null_false_alarm_rate"]["value"] == 0.5
    assert m["flagged_per_planted"]["value"] == 1.5
    assert m["oversensitivity"]["value"] == pytest.approx(1.0 / 1.5)
    assert m["analog_fp_flagged"]["value"] == 1.0 and m["analog_fp@20"]["value"] == 1.0
    # null-calibrated threshold: 95th percentile of null uniqueness (0.85, 0.3, 0.2, 0.1) ~ 0.80;
    # p1's hit (0.9) clears it, p2's (0.95) too
    assert m["recall@null5"]["value"] == 1.0
    # organism AUROC: planted tops 0.9, 0.95 vs null tops 0.85, 0.2 -> 1.0
    assert m["organism_auroc"]["value"] == 1.0
    for key in ("recall@1", "null_false_alarm_rate"):
        assert m[key]["lo"] <= m[key]["value"] <= m[key]["hi"]
    assert m["recall@1"]["lo"] < m["recall@1"]["hi"]  # resampling two organisms gives a real interval


def test_no_metric_reads_misses():
    """compute_metrics bootstraps over hits only; that is exact only while no metric reads a miss record."""
    from diffbench.harness.score.metrics import SeedView, metrics_one_seed

    results, records = toy_results()
    assert any(not r.hit for r in records)
    full = metrics_one_seed(SeedView(results, records, CFG))
    hits_only = metrics_one_seed(SeedView(results, [r for r in records if r.hit], CFG))
    assert full.keys() == hits_only.keys()
    for k in full:
        assert full[k] == pytest.approx(hits_only[k], nan_ok=True), k


def test_edge_cases_no_findings_failed_and_excluded():
    results = [
        res("m", "p1", "planted", ["x"], [], []),  # returned nothing
        PairResult("m", 0, "p2", "planted", ("y",), "failed", error="RuntimeError: boom"),
        PairResult("m", 0, "p3", "planted", ("z",), "excluded", error="gate"),
        res("m", "n1", "null", [], [], []),
    ]
    m = compute_metrics(results, [], CFG)["m"]
    assert m["recall@20"]["value"] == 0.0  # failed and empty count as misses; excluded pairs are not units...
    assert math.isnan(m["precision@5"]["value"])  # no findings anywhere: precision undefined
    assert math.isnan(m["fdr"]["value"])
    assert m["null_false_alarm_rate"]["value"] == 0.0
    assert m["_status"] == {"ok": 2, "failed": 1, "excluded": 1}
    assert any("boom" in e for e in m["_errors"])


def test_excluded_pairs_are_not_units():
    results, records = toy_results()
    results.append(PairResult("m", 0, "p3", "planted", ("z",), "excluded", error="gate"))
    m = compute_metrics(results, records, CFG)["m"]
    assert m["recall@5"]["value"] == 1.0


def test_seed_mean_spread_and_agreement():
    results, records = toy_results()
    r2 = [PairResult(**{**r.__dict__, "seed": 1}) for r in results]
    rec2 = [MatchRecord(**{**x.__dict__, "seed": 1, "act_match": x.act_match and x.pair != "p2"}) for x in records]
    m = compute_metrics(results + r2, records + rec2, CFG)["m"]
    assert m["recall@5"]["value"] == pytest.approx(0.75)  # seed 0: 1.0, seed 1: 0.5
    assert m["recall@5"]["seed_std"] == pytest.approx(0.25)
    assert m["seed_agreement"]["value"] == 0.5  # p1/x agrees, p2/y does not


def test_floors_get_the_causal_test_on_every_seed():
    """A floor's any-channel recall is averaged over all its seeds (strong.floor_max_seeds: None); another method's
    over its first strong.max_seeds only. Here only seed 4 (beyond max_seeds = 3) has a hit."""
    results, records = [], []
    for seed in range(5):
        results += [res("m", "p1", "planted", ["x"], [0.9], [True], seed=seed)]
        records += [rec("m", "p1", "planted", "x", 0, hit=(seed == 4), seed=seed)]
    assert CFG.strong.max_seeds == 3 and CFG.strong.floor_max_seeds is None
    as_method = compute_metrics(results, records, CFG)["m"]
    as_floor = compute_metrics(results, records, CFG, floors=frozenset({"m"}))["m"]
    assert as_method["recall@5"]["value"] == 0.0  # seeds 0-2 carry the any-channel figure: no hit there
    assert as_floor["recall@5"]["value"] == pytest.approx(1 / 5)  # every seed counts
    assert CFG.strong.seeds_tested([0, 1, 2, 3, 4], floor=False) == [0, 1, 2]
    assert CFG.strong.seeds_tested([0, 1, 2, 3, 4], floor=True) == [0, 1, 2, 3, 4]


def test_metric_registry_drives_scores_and_leaderboard():
    """Metrics and the leaderboard's columns follow scoring.ks (nothing hard-codes a k); a new metric is one
    registered function, and it appears in the per-seed metrics and in the table its registration names."""
    from diffbench.harness.score import metrics as M

    cfg = ScoringConfig.from_dict({"ks": [2, 10, 50]})
    lead = [k for k, _ in M.columns(cfg, "lead")]
    assert lead[0] == "recall@10" and "analog_fp@50" in lead and "null_false_alarm_rate" in lead
    results, records = toy_results()
    got = M.metrics_one_seed(M.SeedView(results, records, cfg))
    assert {"recall@2", "recall@10", "recall@50", "analog_fp@50", "recall@null5"} <= set(got)
    assert "recall@20" not in got and "analog_fp@20" not in got

    @M.metric("test_top_uniqueness", "top u", higher_is_better=True, reads=("planted",), show=(("rest", None),))
    def top_uniqueness(v, k=None):
        return max((max(p.uniqueness) for p in v.ok["planted"] if p.uniqueness), default=float("nan"))

    try:
        assert "test_top_uniqueness" in M.metrics_one_seed(M.SeedView(results, records, cfg))
        assert ("test_top_uniqueness", "top u ↑") in M.columns(cfg, "rest")
    finally:
        M.METRICS._items.pop("test_top_uniqueness")
