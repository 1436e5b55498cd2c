"""The metric registry: each leaderboard metric is one small registered function.

A metric reads one method's pair results and hits on one seed (a `SeedView`) and returns a number. Its
registration says what it is called (`name`, with `{k}` for each of scoring.ks), how the leaderboard labels
it, whether higher is better, which pair kinds it reads, and where the leaderboard shows it (`show`). The
leaderboard's columns come from here (`columns`), so a new metric is one decorated function:

    @metric("my_metric", "my label", higher_is_better=True, reads=("planted",), show=(("rest", None),))
    def my_metric(v: SeedView, k: int | None) -> float: ...

`show` entries are (table, which k): table is "lead" (what separates methods), "channel" (recall by channel),
"rest", or "cross" (cross-architecture table); which k is None (not per-k), "all", "mid" (the middle of ks),
"max" (K = the largest), "other" (every k but the middle), or "strong_mid" (the middle k if the strong channel
reaches it, else its largest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from ...core.registry import Registry
from .calibration import safe_auroc

if TYPE_CHECKING:
    from .config import ScoringConfig
    from .scoring import MatchRecord, PairResult

NAN = float("nan")


def nanmean(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(xs)) if xs else NAN


@dataclass
class SeedView:
    """One method's results on one seed, as every metric reads them.

    `strong_seed`: this seed got the causal test (strong.max_seeds); on other seeds the any-channel and strong
    metrics are undefined (nan), so that every any-channel figure includes all three channels (`any_ok`)."""

    results: list["PairResult"]
    records: list["MatchRecord"]
    cfg: "ScoringConfig"
    cross: bool = False
    strong_seed: bool = True
    hits: dict[tuple[str, str], list["MatchRecord"]] = field(init=False)

    def __post_init__(self) -> None:
        self.hits = {}
        for r in self.records:
            if r.hit:
                self.hits.setdefault((r.pair, r.behavior), []).append(r)
        # pairs excluded by the plant gate are not part of the ground truth, and a method that cannot be defined
        # for a pair (not_applicable, listed with its reason) is not scored on it; failed runs count as misses
        scored = [p for p in self.results if p.status not in ("excluded", "not_applicable")]
        self.planted = [p for p in scored if p.pair_kind == "planted"]
        self.ok = {kind: [p for p in scored if p.pair_kind == kind and p.status == "ok"] for kind in ("planted", "null", "analog")}
        self.units = [(p, b) for p in self.planted for b in p.behaviors]
        self.any_ok = self.strong_seed or not self.cfg.strong.enabled or self.cross

    def recall(self, k: int, ok: Callable[["MatchRecord"], bool] = lambda r: True) -> float:
        """Share of (planted pair, behavior) units with a hit (that passes `ok`) among the top k findings."""
        if not self.units:
            return NAN
        return nanmean(float(p.status == "ok" and any(r.rank < k and ok(r) for r in self.hits.get((p.pair, b), [])))
                       for p, b in self.units)

    def hit_ranks(self, p: "PairResult") -> set[int]:
        return {r.rank for b in p.behaviors for r in self.hits.get((p.pair, b), [])}


@dataclass(frozen=True)
class Metric:
    name: str  # scores.json key; "{k}" for each k of scoring.ks
    label: str  # leaderboard header
    fn: Callable[[SeedView, int | None], float] | None  # None: computed across seeds (seed_agreement)
    higher_is_better: bool
    reads: tuple[str, ...]  # the pair kinds it reads: planted, null, analog
    show: tuple[tuple[str, str | None], ...] = ()  # (table, which k), see the module docstring
    defined: Callable[["ScoringConfig", bool, int | None], bool] = lambda cfg, cross, k: True  # exists for this run?
    cross_label: str | None = None  # header in the cross-architecture table, where it differs

    @property
    def per_k(self) -> bool:
        return "{k}" in self.name

    def key(self, cfg: "ScoringConfig", k: int | None = None) -> str:
        return self.name.format(k=k, K=cfg.K, null=null_percent(cfg))


METRICS: Registry[Metric] = Registry("metric")


def metric(name: str, label: str, *, higher_is_better: bool, reads: tuple[str, ...], show=(), defined=None, cross_label=None):
    def wrap(fn):
        METRICS.register(name)(Metric(name, label, fn, higher_is_better, reads, tuple(show),
                                      defined or (lambda cfg, cross, k: True), cross_label))
        return fn

    return wrap


def null_percent(cfg: "ScoringConfig") -> str:
    return f"{100 * (1 - cfg.null_quantile):g}"


def strong_ks(cfg: "ScoringConfig") -> list[int]:
    return [k for k in cfg.ks if k <= cfg.strong.k] if cfg.strong.enabled else []


# -- recall at k, by channel ---------------------------------------------------------------------------
# registration order is the order of scores.json's keys and of scores.csv's columns

@metric("recall@{k}", "R@{k}", higher_is_better=True, reads=("planted",), show=(("lead", "mid"), ("rest", "other"), ("cross", "all")))
def recall_any(v: SeedView, k: int) -> float:
    return v.recall(k) if v.any_ok else NAN


@metric("recall_act@{k}", "act R@{k}", higher_is_better=True, reads=("planted",), show=(("channel", "all"),))
def recall_act(v: SeedView, k: int) -> float:
    return v.recall(k, lambda r: r.act_match)


@metric("recall_token@{k}", "token R@{k}", higher_is_better=True, reads=("planted",), show=(("channel", "all"),))
def recall_token(v: SeedView, k: int) -> float:
    return v.recall(k, lambda r: r.token_match)


@metric("recall_strong@{k}", "strong R@{k}", higher_is_better=True, reads=("planted",),
        show=(("lead", "strong_mid"), ("channel", "strong")),
        defined=lambda cfg, cross, k: not cross and cfg.strong.enabled and k <= cfg.strong.k)
def recall_strong(v: SeedView, k: int) -> float:
    return v.recall(k, lambda r: r.strong_match) if v.strong_seed else NAN


@metric("recall_noncausal@{k}", "act or token R@{k}", higher_is_better=True, reads=("planted",))
def recall_noncausal(v: SeedView, k: int) -> float:
    """Activation or token, on every seed: the figure that estimates a floor's chance rate over all its seeds."""
    return v.recall(k, lambda r: r.act_match or r.token_match)


@metric("precision@{k}", "P@{k}", higher_is_better=True, reads=("planted",), show=(("rest", "mid"), ("cross", "mid")))
def precision(v: SeedView, k: int) -> float:
    prec = []
    for p in v.planted:
        if p.status != "ok" or p.n_findings == 0:
            continue
        ranks, top = v.hit_ranks(p), min(k, p.n_findings)
        prec.append(sum(1 for rank in range(top) if rank in ranks) / top)
    return nanmean(prec) if v.any_ok else NAN


@metric("exclusive_recall@{k}", "excl. R@{k}", higher_is_better=True, reads=("planted",), show=(("cross", "max"),),
        defined=lambda cfg, cross, k: cross)
def exclusive_recall(v: SeedView, k: int) -> float:
    """Cross-architecture pairs: the hit comes from a finding that attributes the difference to the model the
    behavior was planted in."""
    return v.recall(k, lambda r: r.exclusive_hit)


# -- flags: the methods' own decision rules ---------------------------------------------------------------

@metric("fdr", "FDR(flagged)", higher_is_better=False, reads=("planted",), show=(("rest", None), ("cross", None)))
def fdr(v: SeedView, k=None) -> float:
    flagged = sum(p.n_flagged for p in v.planted if p.status == "ok")
    true_flags = 0
    for p in v.planted:
        if p.status == "ok":
            ranks = v.hit_ranks(p)  # once per pair, not per flagged finding (metrics run inside the bootstrap)
            true_flags += sum(1 for rank, f in enumerate(p.flagged) if f and rank in ranks)
    return ((flagged - true_flags) / flagged if flagged else NAN) if v.any_ok else NAN


@metric("flagged_per_planted", "flags/planted pair", higher_is_better=False, reads=("planted",), show=(("cross", None),))
def flagged_per_planted(v: SeedView, k=None) -> float:
    return nanmean(p.n_flagged for p in v.ok["planted"])


@metric("null_flagged_per_pair", "null flags/pair", higher_is_better=False, reads=("null",), show=(("rest", None), ("cross", None)),
        cross_label="background flags")
def null_flagged_per_pair(v: SeedView, k=None) -> float:
    return nanmean(p.n_flagged for p in v.ok["null"])


@metric("null_false_alarm_rate", "null FA rate", higher_is_better=False, reads=("null",), show=(("lead", None),))
def null_false_alarm_rate(v: SeedView, k=None) -> float:
    return nanmean(float(p.n_flagged > 0) for p in v.ok["null"])


@metric("recall@null{null}", "R@null{null}%", higher_is_better=True, reads=("planted", "null"), show=(("rest", None), ("cross", None)),
        cross_label="R@bg{null}%")
def recall_at_null(v: SeedView, k=None) -> float:
    """Recall with the threshold set at the null pairs' uniqueness quantile (scoring.null_quantile)."""
    null_u = [u for p in v.ok["null"] for u in p.uniqueness]
    tau = float(np.quantile(null_u, v.cfg.null_quantile)) if null_u else float("-inf")
    if not (v.units and v.ok["null"] and v.any_ok):
        return NAN
    return nanmean(float(p.status == "ok" and any(r.uniqueness > tau for r in v.hits.get((p.pair, b), []))) for p, b in v.units)


@metric("oversensitivity", "oversens.", higher_is_better=False, reads=("planted", "null"), show=(("rest", None), ("cross", None)))
def oversensitivity(v: SeedView, k=None) -> float:
    fpp, nfp = flagged_per_planted(v), null_flagged_per_pair(v)
    return nfp / fpp if fpp and not math.isnan(fpp) and fpp > 0 and not math.isnan(nfp) else NAN


# -- analog pairs: related but not planted behaviors -----------------------------------------------------

@metric("analog_fp_flagged", "analog FP flagged", higher_is_better=False, reads=("analog",), show=(("rest", None), ("cross", None)))
def analog_fp_flagged(v: SeedView, k=None) -> float:
    return nanmean(sum(1 for b in p.behaviors for r in v.hits.get((p.pair, b), []) if r.flagged) for p in v.ok["analog"]) if v.any_ok else NAN


@metric("analog_fp@{K}", "analog FP@{K}", higher_is_better=False, reads=("analog",), show=(("lead", None), ("cross", None)))
def analog_fp(v: SeedView, k=None) -> float:
    """Analog pairs with any hit among the top K = max(ks) findings."""
    return nanmean(float(any(r.rank < v.cfg.K for b in p.behaviors for r in v.hits.get((p.pair, b), []))) for p in v.ok["analog"]) if v.any_ok else NAN


# -- organisms: does the method's top uniqueness separate planted from null pairs? ---------------------------

@metric("organism_auroc", "org. AUROC", higher_is_better=True, reads=("planted", "null"), show=(("lead", None),))
def organism_auroc(v: SeedView, k=None) -> float:
    top_planted = [max(p.uniqueness) if p.uniqueness else -1e30 for p in v.ok["planted"]]
    top_null = [max(p.uniqueness) if p.uniqueness else -1e30 for p in v.ok["null"]]
    if not (top_planted and top_null):
        return NAN
    return safe_auroc(np.array([1] * len(top_planted) + [0] * len(top_null)), np.array(top_planted + top_null))


# computed across seeds (compute_metrics), registered for its label and place in the leaderboard
METRICS.register("seed_agreement")(Metric("seed_agreement", "seed agree.", None, higher_is_better=True, reads=("planted",),
                                          show=(("rest", None),)))


def metrics_one_seed(v: SeedView) -> dict[str, float]:
    """Every registered metric that is defined for this run, per-k ones for each k (k outermost, as scores.csv
    lists them), then the others."""
    out: dict[str, float] = {}
    per_k = [m for m in METRICS.values() if m.per_k]
    for k in v.cfg.ks:
        for m in per_k:
            if m.defined(v.cfg, v.cross, k):
                out[m.key(v.cfg, k)] = m.fn(v, k)
    for m in METRICS.values():
        if not m.per_k and m.fn is not None and m.defined(v.cfg, v.cross, None):
            out[m.key(v.cfg)] = m.fn(v, None)
    return out


def _ks_for(which: str | None, cfg: "ScoringConfig") -> list[int | None]:
    ks = list(cfg.ks)
    mid = ks[len(ks) // 2]
    sk = strong_ks(cfg)
    return {None: [None], "all": ks, "mid": [mid], "max": [cfg.K], "other": [k for k in ks if k != mid], "strong": sk,
            "strong_mid": ([mid] if mid in sk else sk[-1:])}[which]


def columns(cfg: "ScoringConfig", table: str) -> list[tuple[str, str]]:
    """(scores.json key, header) of the leaderboard table `table`, in registration order; the header ends in ↑
    (higher is better) or ↓ (lower is better)."""
    cols = []
    for m in METRICS.values():
        for t, which in m.show:
            if t != table:
                continue
            for k in _ks_for(which, cfg):
                label = (m.cross_label if table == "cross" and m.cross_label else m.label)
                arrow = "↑" if m.higher_is_better else "↓"
                cols.append((m.key(cfg, k), f"{label.format(k=k, K=cfg.K, null=null_percent(cfg))} {arrow}"))
    return cols
