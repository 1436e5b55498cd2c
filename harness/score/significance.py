"""Statistics for a decisive leaderboard: paired tests between methods, detection at a fixed false-alarm
rate, and the power of the suite.

Everything here reads a finished run folder (scores.json, pair_results.csv, matches.csv and, for the pair scores,
runs.csv's top_uniqueness or else findings/) and nothing else; no model is loaded, and nothing from the harness is
imported but the calibration's AUROC, so report.py can import this module.

- `load_hit_table`: per method, one hit value per *unit* (a planted (pair, behavior) combination of a
  same-architecture pair): 1 when one of its top-k findings hits the behavior on any channel, averaged over the
  seeds its any-channel recall is defined on (so in [0, 1]); nan where the method was not scored on the unit.
  The mean of a method's vector is its leaderboard recall@k.
- `compare_methods`: every pair of methods, the difference in recall@k over the units both have, a paired
  bootstrap 95% interval, an exact two-sided p-value (McNemar / sign-flip) and Holm-adjusted p-values.
- `detection`: a pair-level score per method (its top finding's uniqueness), the thresholds that flag at most 1% /
  5% of the null pairs, the share of planted pairs above them (Clopper-Pearson 95%) and the organism AUROC
  (planted vs null pairs) with a bootstrap interval.
- `min_detectable_difference`: the smallest difference in recall a paired test on N units detects at 80% power.
- `significance_section(run_dir)`: all of the above as Markdown lines for leaderboard.md.

Only numpy and scipy (statsmodels is not installed); Holm's step-down is written out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import stats

from ...core.io import read_csv, read_json

ALPHA = 0.05
FA_RATES = (0.01, 0.05)
EXACT_SIGN_FLIP_MAX = 16  # sign-flip test: enumerate all 2^n sign vectors up to this many nonzero differences


# ----------------------------------------------------------------------------- the per-unit hit table


@dataclass
class HitTable:
    """Per method, a hit value for each unit (planted pair, behavior), all over the same ordered `units`.

    `hits[m][i]`: share of method m's seeds on which one of its top-k findings hits unit i on any channel (a failed
    run counts as a miss, as in the leaderboard); nan where m was not scored on the unit (not run, not applicable,
    pair excluded by the plant gate, or no seed on which the any-channel figure is defined)."""

    k: int
    units: list[tuple[str, str]]
    hits: dict[str, np.ndarray]
    seeds: dict[str, list[int]] = field(default_factory=dict)  # the seeds each method's values average over
    floors: frozenset[str] = frozenset()

    @property
    def methods(self) -> list[str]:
        return list(self.hits)

    def recall(self, method: str) -> float:
        """The method's recall@k over the units it was scored on (nan if none)."""
        v = self.hits[method]
        v = v[~np.isnan(v)]
        return float(v.mean()) if len(v) else float("nan")

    def paired(self, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
        """Both methods' values on the units both were scored on."""
        x, y = self.hits[a], self.hits[b]
        keep = ~(np.isnan(x) | np.isnan(y))
        return x[keep], y[keep]


def _is_true(x: str | None) -> bool:
    return str(x) == "True"


def _row_hit(r: dict) -> bool:
    if "hit" in r and r["hit"] not in (None, ""):
        return _is_true(r["hit"])
    return _is_true(r.get("act_match")) or _is_true(r.get("token_match")) or _is_true(r.get("strong_match"))


def _any_channel_seeds(scores: dict, method: str, seeds: list[int]) -> list[int]:
    """The seeds on which a method's any-channel recall is defined: those that got the causal test when the strong
    channel is on (StrongConfig.seeds_tested), every seed otherwise."""
    strong = (scores.get("scoring") or {}).get("strong") or {}
    if isinstance(strong, bool):
        strong = {"enabled": strong}
    if not strong.get("enabled", True):
        return seeds
    floor = method in set(scores.get("floors") or [])
    limit = strong.get("floor_max_seeds") if floor else strong.get("max_seeds", 3)
    return seeds if limit is None else seeds[: int(limit)]


def build_hit_table(scores: dict, pair_rows: Sequence[dict], match_rows: Iterable[dict], k: int = 5,
                    include_floors: bool = False, failed_as_miss: bool = True) -> HitTable:
    """The hit table from the contents of a run folder: `scores` (scores.json), `pair_rows` (pair_results.csv: method,
    seed, pair, status) and `match_rows` (matches.csv: method, seed, pair, behavior, rank, hit).

    Units are the behaviors of the same-architecture planted pairs, in scores.json's pair order. A method's seeds
    are those its any-channel recall is defined on (see `_any_channel_seeds`). `failed_as_miss=False` makes a failed
    run missing instead of a miss (the leaderboard counts it as a miss)."""
    floors = frozenset(scores.get("floors") or [])
    planted = [p for p in scores.get("pairs") or [] if p.get("kind") == "planted" and not p.get("cross")]
    units = [(p["id"], b) for p in planted for b in p.get("behaviors") or []]
    unit_pairs = {p["id"] for p in planted}
    status: dict[tuple[str, int, str], str] = {}
    for r in pair_rows:
        if r["pair"] in unit_pairs:
            status[(r["method"], int(r["seed"]), r["pair"])] = r["status"]
    hit: set[tuple[str, int, str, str]] = set()
    for r in match_rows:
        if r["pair"] in unit_pairs and int(r["rank"]) < k and _row_hit(r):
            hit.add((r["method"], int(r["seed"]), r["pair"], r["behavior"]))
    methods = list((scores.get("seeds") or {}).keys()) or sorted({m for m, _, _ in status})
    table: dict[str, np.ndarray] = {}
    used: dict[str, list[int]] = {}
    for m in methods:
        if m in floors and not include_floors:
            continue
        ran = sorted({s for (mm, s, _) in status if mm == m})
        seeds = _any_channel_seeds(scores, m, sorted(set((scores.get("seeds") or {}).get(m) or ran)))
        vals = np.full(len(units), np.nan)
        for i, (pair, b) in enumerate(units):
            per_seed = []
            for s in seeds:
                st = status.get((m, s, pair))
                if st == "ok":
                    per_seed.append(float((m, s, pair, b) in hit))
                elif st == "failed" and failed_as_miss:
                    per_seed.append(0.0)
            if per_seed:
                vals[i] = float(np.mean(per_seed))
        if not np.all(np.isnan(vals)) or not units:
            table[m] = vals
            used[m] = seeds
    return HitTable(k, units, table, used, floors)


def load_hit_table(run_dir: str | Path, k: int = 5, include_floors: bool = False, failed_as_miss: bool = True) -> HitTable:
    """`build_hit_table` on a run folder's scores.json, pair_results.csv and matches.csv."""
    run_dir = Path(run_dir)
    return build_hit_table(read_json(run_dir / "scores.json"), read_csv(run_dir / "pair_results.csv"),
                           read_csv(run_dir / "matches.csv"), k, include_floors, failed_as_miss)


# ----------------------------------------------------------------------------- paired tests


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error): the i-th smallest of m p-values becomes
    max_{j <= i} min(1, (m - j + 1) p_(j)). nan p-values stay nan and do not count in m."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    running = 0.0
    for j, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - j) * p[i]))
        out[i] = running
    return out


def mcnemar_exact(n_a_only: int, n_b_only: int) -> float:
    """Exact two-sided McNemar test: the discordant units are Binomial(n_a_only + n_b_only, 1/2) under H0."""
    n = n_a_only + n_b_only
    return 1.0 if n == 0 else float(stats.binomtest(n_a_only, n, 0.5).pvalue)


def sign_flip_pvalue(d: np.ndarray, n_perm: int = 20000, seed: int = 0) -> float:
    """Paired permutation test of mean(d) = 0: flip the sign of each difference at random, two-sided on |sum(d)|.
    Exact (every sign vector) up to EXACT_SIGN_FLIP_MAX nonzero differences, else Monte Carlo with a fixed seed and
    p = (1 + #{|S*| >= |S|}) / (1 + n_perm)."""
    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    obs = abs(d.sum()) - 1e-12 * max(1.0, abs(d).sum())  # tolerance: the observed vector itself always counts
    if len(d) <= EXACT_SIGN_FLIP_MAX:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
        return float(np.mean(np.abs(signs @ d) >= obs))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_perm, len(d)))
    return float((1 + np.sum(np.abs(signs @ d) >= obs)) / (1 + n_perm))


def paired_bootstrap_ci(d: np.ndarray, n_boot: int = 10000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(d) over `n_boot` resamples of the units (with replacement), fixed seed."""
    d = np.asarray(d, dtype=float)
    if len(d) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    q = (1 - level) / 2
    return float(np.quantile(means, q)), float(np.quantile(means, 1 - q))


@dataclass(frozen=True)
class Comparison:
    """Method a vs method b over the `n_units` units both were scored on; `diff` = recall_a - recall_b."""

    a: str
    b: str
    n_units: int
    recall_a: float
    recall_b: float
    diff: float
    lo: float  # paired bootstrap 95% interval of diff
    hi: float
    p: float  # two-sided
    test: str  # "McNemar (exact)" when both are 0/1 per unit, else "sign-flip"
    n_a_only: float  # units (summed shares for averaged seeds) where a hits and b does not
    n_b_only: float
    p_holm: float = float("nan")  # Holm-adjusted over every comparison of the call

    def significant(self, alpha: float = ALPHA) -> bool:
        return not math.isnan(self.p_holm) and self.p_holm < alpha


def compare_pair(a: str, b: str, x: np.ndarray, y: np.ndarray, n_boot: int = 10000, seed: int = 0) -> Comparison:
    """One paired comparison of two aligned hit vectors (no missing values)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    d = x - y
    n = len(d)
    if n == 0:
        nan = float("nan")
        return Comparison(a, b, 0, nan, nan, nan, nan, nan, nan, "none", 0, 0)
    lo, hi = paired_bootstrap_ci(d, n_boot, seed)
    a_only, b_only = float(np.clip(d, 0, None).sum()), float(np.clip(-d, 0, None).sum())
    binary = bool(np.all(np.isin(x, (0.0, 1.0))) and np.all(np.isin(y, (0.0, 1.0))))
    if binary:
        p, test = mcnemar_exact(int(round(a_only)), int(round(b_only))), "McNemar (exact)"
    else:
        p, test = sign_flip_pvalue(d, seed=seed), "sign-flip"
    return Comparison(a, b, n, float(x.mean()), float(y.mean()), float(d.mean()), lo, hi, p, test, a_only, b_only)


def compare_methods(table: HitTable, methods: Sequence[str] | None = None, n_boot: int = 10000, seed: int = 0) -> list[Comparison]:
    """Every pair of `methods` (default: all in the table), oriented so that `a` has the higher recall on the shared
    units, with Holm-adjusted p-values over all the pairs; sorted by p, then by -diff."""
    methods = list(methods if methods is not None else table.methods)
    rows = []
    for m1, m2 in combinations(methods, 2):
        x, y = table.paired(m1, m2)
        if len(x) and x.mean() < y.mean():
            m1, m2, x, y = m2, m1, y, x
        rows.append(compare_pair(m1, m2, x, y, n_boot, seed))
    adj = holm([r.p for r in rows])
    rows = [replace(r, p_holm=float(q)) for r, q in zip(rows, adj)]
    return sorted(rows, key=lambda r: (math.isnan(r.p), r.p, -r.diff if not math.isnan(r.diff) else 0.0, r.a, r.b))


def smallest_p(n_units: int) -> float:
    """The smallest two-sided p-value an exact McNemar / sign test can give with n units (all discordant, one way)."""
    return min(1.0, 2 * 0.5 ** n_units) if n_units > 0 else 1.0


# ----------------------------------------------------------------------------- detection at a fixed false-alarm rate


def binomial_interval(k: int, n: int, level: float = 0.95, method: str = "exact") -> tuple[float, float]:
    """Interval of a binomial proportion k / n from scipy's binomtest (method "exact": Clopper-Pearson; "wilson":
    Wilson score); (nan, nan) without trials."""
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method=method)
    return float(ci.low), float(ci.high)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion k / n."""
    return binomial_interval(k, n, level, "exact")


@dataclass(frozen=True)
class Threshold:
    """A score threshold set on the null pairs: a pair is flagged when its score is strictly above `value`."""

    target: float  # the false-alarm rate asked for
    value: float
    n_null: int
    null_flagged: int  # null pairs above the threshold: at most floor(target * n_null)

    @property
    def realised(self) -> float:
        return self.null_flagged / self.n_null if self.n_null else float("nan")


def fixed_fa_threshold(null_scores: Sequence[float], target: float) -> Threshold:
    """The threshold that flags at most floor(target * n) of the n null scores (score > threshold).

    It is the (a+1)-th largest null score, a = floor(target * n): with 20 null pairs, 5% allows 1 (threshold = the
    second largest) and 1% none (threshold = the largest). Ties at the threshold are not flagged, so the realised
    rate can be lower than a / n."""
    s = np.sort(np.asarray(null_scores, dtype=float))[::-1]
    n = len(s)
    if n == 0:
        return Threshold(target, float("nan"), 0, 0)
    allowed = int(math.floor(target * n + 1e-9))
    value = float(s[min(allowed, n - 1)]) if allowed < n else float("-inf")
    return Threshold(target, value, n, int(np.sum(s > value)))


def auroc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC of positives over negatives (ties count half; calibration.batch_auroc), batched over leading axes."""
    from .calibration import batch_auroc

    pos, neg = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    scores = np.concatenate([pos, neg], axis=-1)
    labels = np.r_[np.ones(pos.shape[-1]), np.zeros(neg.shape[-1])]
    out = batch_auroc(labels, scores.reshape(-1, scores.shape[-1]).T)
    return out.reshape(scores.shape[:-1])


def auroc_bootstrap(pos: Sequence[float], neg: Sequence[float], n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """(AUROC, lo, hi): percentile interval resampling planted and null pairs separately, fixed seed."""
    pos, neg = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    bp = pos[rng.integers(0, len(pos), size=(n_boot, len(pos)))]
    bn = neg[rng.integers(0, len(neg), size=(n_boot, len(neg)))]
    draws = auroc(bp, bn)
    q = (1 - level) / 2
    return float(auroc(pos, neg)), float(np.quantile(draws, q)), float(np.quantile(draws, 1 - q))


@dataclass(frozen=True)
class AtRate:
    """Planted pairs detected at one fixed-false-alarm threshold."""

    threshold: Threshold
    n_planted: int
    detected: int
    lo: float  # Clopper-Pearson 95%
    hi: float

    @property
    def share(self) -> float:
        return self.detected / self.n_planted if self.n_planted else float("nan")


@dataclass(frozen=True)
class Detection:
    """One method's pair-level detection: its score on planted vs null pairs."""

    method: str
    n_planted: int
    n_null: int
    auroc: float
    auroc_lo: float
    auroc_hi: float
    at: tuple[AtRate, ...]


def detection(method: str, planted: Sequence[float], null: Sequence[float], rates: Sequence[float] = FA_RATES,
              n_boot: int = 2000, seed: int = 0) -> Detection:
    """Thresholds at each false-alarm rate in `rates` on the null scores, the planted pairs above them, and the AUROC."""
    planted, null = np.asarray(planted, dtype=float), np.asarray(null, dtype=float)
    at = []
    for rate in rates:
        th = fixed_fa_threshold(null, rate)
        det = int(np.sum(planted > th.value)) if th.n_null else 0
        lo, hi = clopper_pearson(det, len(planted)) if th.n_null else (float("nan"), float("nan"))
        at.append(AtRate(th, len(planted), det, lo, hi))
    auc, lo, hi = auroc_bootstrap(planted, null, n_boot, seed)
    return Detection(method, len(planted), len(null), auc, lo, hi, tuple(at))


@dataclass
class PairScores:
    """Per method, pair -> score (its top finding's uniqueness, mean over the seeds that have one), the pair kinds,
    and where the scores came from."""

    scores: dict[str, dict[str, float]]
    kinds: dict[str, str]
    source: str

    def split(self, method: str) -> tuple[list[float], list[float]]:
        """(planted scores, null scores) of a method, in pair order."""
        s = self.scores.get(method, {})
        return ([v for p, v in s.items() if self.kinds.get(p) == "planted"], [v for p, v in s.items() if self.kinds.get(p) == "null"])


def _top_from_findings(path: Path) -> float | None:
    try:
        recs = json.loads(path.read_text())["findings"]
    except (OSError, ValueError, KeyError):
        return None
    return max((float(r["uniqueness"]) for r in recs), default=float("-inf"))


def _float_or_none(x: str | None) -> float | None:
    try:
        return float(x) if x not in (None, "") else None
    except ValueError:
        return None


def load_pair_scores(run_dir: str | Path) -> PairScores:
    """Each method's score per same-architecture planted or null pair: the largest uniqueness of its findings (the
    top finding; organism_auroc's score), averaged over the seeds with a successful run; a run with no findings
    scores -inf. Runs that failed, were not applicable or excluded have no score.

    Read from runs.csv's `top_uniqueness` column (the score stage records it for every run with findings), else from
    findings/<method>/<pair>@s<seed>.json; a published run folder scored before that column existed has neither
    (scripts/publish_run.py leaves findings/ out), and then every method's scores are empty and `source` says so."""
    run_dir = Path(run_dir)
    scores_json = read_json(run_dir / "scores.json")
    kinds = {p["id"]: p["kind"] for p in scores_json.get("pairs") or [] if not p.get("cross") and p["kind"] in ("planted", "null")}
    ok: dict[tuple[str, str], list[int]] = {}
    for r in read_csv(run_dir / "pair_results.csv"):
        if r["pair"] in kinds and r["status"] == "ok":
            ok.setdefault((r["method"], r["pair"]), []).append(int(r["seed"]))
    methods = list((scores_json.get("seeds") or {}).keys()) or sorted({m for m, _ in ok})
    runs = read_csv(run_dir / "runs.csv")
    recorded = {(r["method"], r["pair"], int(r["seed"])): _float_or_none(r.get("top_uniqueness")) for r in runs
                if "top_uniqueness" in r}
    have_findings = (run_dir / "findings").is_dir()
    out: dict[str, dict[str, float]] = {}
    for m in methods:
        for pair in kinds:
            seeds = sorted(ok.get((m, pair), []))
            if recorded:
                vals = [recorded.get((m, pair, s_)) for s_ in seeds]
                vals = [float("-inf") if v is None and (m, pair, s_) in recorded else v for v, s_ in zip(vals, seeds)]
            elif have_findings:
                vals = [_top_from_findings(run_dir / "findings" / m / f"{pair}@s{s_}.json") for s_ in seeds]
            else:
                vals = []
            vals = [v for v in vals if v is not None]
            if vals:
                out.setdefault(m, {})[pair] = float(np.mean(vals))
    source = ("runs.csv (top finding per run, mean over seeds)" if recorded else
              "findings/ (top finding per run, mean over seeds)" if have_findings else
              "not recorded in this run folder (scored before runs.csv had top_uniqueness; rescore it with diffbench report)")
    return PairScores(out, kinds, source)


# ----------------------------------------------------------------------------- power


def min_detectable_difference(n_units: int, baseline_recall: float = 0.5, discordance: float | None = None,
                              alpha: float = ALPHA, power: float = 0.8) -> float:
    """The smallest difference in recall delta = p_B - p_A that a two-sided paired (McNemar) test at level `alpha`
    detects with probability `power` on `n_units` units: the root of Connor's (1987) normal approximation

        sqrt(n) * delta = z_{1 - alpha/2} * sqrt(psi) + z_{power} * sqrt(psi - delta^2),

    psi the discordant-unit rate (share of units where exactly one method hits). `discordance` fixes psi; None
    assumes the two methods hit independently at recalls p = baseline_recall and p + delta:
    psi = p (1 - p - delta) + (p + delta)(1 - p). Returns nan when no difference up to the largest possible
    (1 - p, or psi for a fixed psi) reaches the power. `mcnemar_power` gives the exact power to check it."""
    if n_units <= 0:
        return float("nan")
    p = float(baseline_recall)
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)

    def psi(delta: float) -> float:
        return float(discordance) if discordance is not None else p * (1 - p - delta) + (p + delta) * (1 - p)

    def f(delta: float) -> float:
        s = psi(delta)
        return math.sqrt(n_units) * delta - za * math.sqrt(max(s, 0.0)) - zb * math.sqrt(max(s - delta * delta, 0.0))

    top = 1 - p if discordance is None else min(1 - p, float(discordance))
    if top <= 0 or f(top) < 0:
        return float("nan")
    from scipy.optimize import brentq

    return float(brentq(f, 1e-12, top, xtol=1e-10))


def units_needed(delta: float, baseline_recall: float = 0.5, discordance: float | None = None, alpha: float = ALPHA,
                 power: float = 0.8) -> int | float:
    """Units a paired test needs to detect `delta` at `power` (the same approximation as `min_detectable_difference`):
    n = ceil((z_{1 - alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2). nan if psi < delta (impossible)."""
    p = float(baseline_recall)
    psi = float(discordance) if discordance is not None else p * (1 - p - delta) + (p + delta) * (1 - p)
    if delta <= 0 or psi < delta or p + delta > 1:
        return float("nan")
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    return int(math.ceil((za * math.sqrt(psi) + zb * math.sqrt(psi - delta * delta)) ** 2 / delta ** 2 - 1e-9))


def mcnemar_power(n_units: int, p_b_only: float, p_a_only: float, alpha: float = ALPHA) -> float:
    """Exact power of the two-sided exact McNemar test on n units, when a unit is discordant in B's favour with
    probability p_b_only and in A's with p_a_only: sum over the number D of discordant units ~ Binomial(n, psi) of
    P(the exact binomial test on D rejects)."""
    psi = p_b_only + p_a_only
    if psi <= 0:
        return 0.0
    q = p_b_only / psi
    total = 0.0
    for d in range(1, n_units + 1):
        ks = np.arange(d + 1)
        tail = stats.binom.cdf(np.minimum(ks, d - ks), d, 0.5)  # two-sided exact p = min(1, 2 * smaller tail)
        reject = np.minimum(1.0, 2 * tail) <= alpha
        if reject.any():
            total += stats.binom.pmf(d, n_units, psi) * float(stats.binom.pmf(ks[reject], d, q).sum())
    return total


# ----------------------------------------------------------------------------- the leaderboard section


def _f(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(x: float) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:.2g}" if x < 0.01 else f"{x:.3f}" if x < 0.1 else f"{x:.2f}"


def _count(x: float) -> str:
    """A count of discordant units: whole, or to 2 decimals where seeds make it a sum of shares."""
    return f"{x:.0f}" if abs(x - round(x)) < 1e-9 else f"{x:.2f}"


def significance_section(run_dir: str | Path, k: int = 5, alpha: float = ALPHA, rates: Sequence[float] = FA_RATES,
                         n_boot: int = 10000) -> list[str]:
    """Markdown lines for leaderboard.md: pairwise significance of recall@k between the non-floor methods, detection
    at fixed false-alarm rates, and the suite's power. Says so, instead of failing, where the run has too few units or
    null pairs."""
    run_dir = Path(run_dir)
    table = load_hit_table(run_dir, k)
    methods = sorted(table.methods, key=lambda m: (-np.nan_to_num(table.recall(m), nan=-1.0), m))
    n = len(table.units)
    lines = ["", f"## Significance (recall@{k}, paired over units)", "",
             f"A unit is one planted (pair, behavior) combination; this run has {n}. A method's value on a unit is 1 when one of "
             f"its top-{k} findings hits the behavior on any channel (the share of its seeds, where it has several), so its "
             f"mean is the recall@{k} above. Each pair of non-floor methods is compared on the units both were scored on: "
             f"Δ = recall@{k} of A minus B with a paired bootstrap 95% interval over units, a two-sided exact McNemar test "
             "(sign-flip test where seeds make values fractional), and Holm's adjustment over all pairs."]
    if len(methods) < 2 or n == 0:
        lines += ["", f"Not enough to compare: {len(methods)} non-floor method(s), {n} same-architecture unit(s)."]
    else:
        rows = compare_methods(table, methods, n_boot=n_boot)
        if smallest_p(n) > alpha:
            lines += ["", f"**Too few units for a paired test**: with {n} units the smallest two-sided p an exact test can give "
                      f"is {smallest_p(n):.2g} (every unit discordant, one way), above α = {alpha:g}, so no difference between "
                      f"two methods can be significant on this run ({len(rows)} pairs not tabulated)."]
        else:
            n_sig = sum(r.significant(alpha) for r in rows)
            lines += ["", f"{n_sig} of {len(rows)} pairs differ at Holm-adjusted p < {alpha:g}.", "",
                      f"| method A | method B | units | Δ recall@{k} [95% CI] | A only / B only | p | Holm p | significant |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in rows:
                lines.append(f"| {r.a} | {r.b} | {r.n_units} | {r.diff:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}] | {_count(r.n_a_only)} / {_count(r.n_b_only)} | "
                             f"{_p(r.p)} | {_p(r.p_holm)} | {'yes' if r.significant(alpha) else 'no'} |")
    lines += _detection_lines(run_dir, rates, min(n_boot, 2000))
    lines += _power_lines(table, methods, k, alpha)
    return lines


def _detection_lines(run_dir: Path, rates: Sequence[float], n_boot: int) -> list[str]:
    ps = load_pair_scores(run_dir)
    scores = read_json(run_dir / "scores.json")
    floors = set(scores.get("floors") or [])
    methods = [m for m in (scores.get("seeds") or ps.scores) if m in ps.scores]
    n_null_pairs = sum(1 for v in ps.kinds.values() if v == "null")
    n_planted_pairs = sum(1 for v in ps.kinds.values() if v == "planted")
    pct = lambda r: f"{100 * r:g}%"
    lines = ["", "### Detection at a fixed false-alarm rate", "",
             "Each method scores a pair by its top finding's uniqueness; the pair is flagged when the score is above the "
             f"threshold that flags at most {' / '.join(pct(r) for r in rates)} of the null pairs. Detected: planted pairs above it, "
             "with an exact (Clopper-Pearson) 95% interval; AUROC: planted vs null pairs by the score, with a bootstrap 95% "
             f"interval (pairs resampled within kind). Scores from {ps.source}."]
    if n_null_pairs == 0 or n_planted_pairs == 0:
        lines += ["", f"Not available on this run: it has {n_planted_pairs} planted and {n_null_pairs} null same-architecture pair(s)."]
        return lines
    if not methods:
        lines += ["", f"Not available on this run: no pair scores ({ps.source})."]
        return lines
    allowed = {r: int(math.floor(r * n_null_pairs + 1e-9)) for r in rates}
    note = "; ".join(f"{pct(r)} of {n_null_pairs} allows {a} null pair(s)" + (" (threshold = the largest null score)" if a == 0 else "")
                     for r, a in allowed.items())
    lines += ["", f"This run has {n_null_pairs} null pair(s): {note}. The FA column is what the threshold realises."
              + (" With so few null pairs every threshold is the largest null score (realised rate 0): a false-alarm rate "
                 f"below 1/{n_null_pairs} cannot be measured on {n_null_pairs} null pair(s)." if all(a == 0 for a in allowed.values()) else "")]
    lines += ["", "| method | planted / null pairs | AUROC [95% CI] | " + " | ".join(f"detected at FA ≤ {pct(r)} [95% CI] (FA)" for r in rates) + " |",
              "|---|---|---|" + "---|" * len(rates)]
    dets = []
    for m in methods:
        planted, null = ps.split(m)
        if planted and null:
            dets.append(detection(m, planted, null, rates, n_boot))
    dets.sort(key=lambda d: (d.method in floors, -d.auroc, d.method))
    for d in dets:
        cells = [f"{a.detected}/{a.n_planted} = {_f(a.share)} [{_f(a.lo)}, {_f(a.hi)}] ({a.threshold.null_flagged}/{a.threshold.n_null})"
                 for a in d.at]
        label = f"{d.method} (floor)" if d.method in floors else d.method
        lines.append(f"| {label} | {d.n_planted} / {d.n_null} | {_f(d.auroc)} [{_f(d.auroc_lo)}, {_f(d.auroc_hi)}] | " + " | ".join(cells) + " |")
    return lines


def _power_lines(table: HitTable, methods: list[str], k: int, alpha: float) -> list[str]:
    n = len(table.units)
    recalls = [table.recall(m) for m in methods if not math.isnan(table.recall(m))]
    if n == 0 or not recalls:
        return ["", "### Power", "", "No units: no power statement."]
    base = float(np.median(recalls))
    mdd = min_detectable_difference(n, base, alpha=alpha)
    what = (f"a difference of {mdd:.2f} in recall@{k}" if not math.isnan(mdd) else
            f"no difference in recall@{k} (not even the largest possible, {1 - base:.2f})")
    sent = (f"With {n} units the suite detects {what} at 80% power (two-sided α = {alpha:g}; McNemar test, Connor's normal "
            f"approximation, assuming the two methods hit units independently, the worse one at the median method's recall@{k}, "
            f"{base:.2f}; methods that tend to hit the same units disagree less, and then smaller differences are detectable)")
    m_pairs = len(methods) * (len(methods) - 1) // 2
    if m_pairs > 1:
        mdd_holm = min_detectable_difference(n, base, alpha=alpha / m_pairs)
        sent += (f". After Holm over {m_pairs} pairs the smallest p must reach α / {m_pairs} = {alpha / m_pairs:.2g}; at that level "
                 + (f"the detectable difference is {mdd_holm:.2f}" if not math.isnan(mdd_holm) else "no difference is detectable"))
    need = units_needed(0.1, base, alpha=alpha)
    if not math.isnan(need):
        sent += f". A difference of 0.10 would need about {need} units at α = {alpha:g}"
    return ["", "### Power", "", sent + "."]


# ----------------------------------------------------------------------------- breakdowns


def unit_groups(run_dir: str | Path) -> dict[str, dict[tuple[str, str], str]]:
    """Per axis (family, recipe, side), each unit's group, from scores.json's `organisms` and `behaviors` (written by
    the score stage since the zoo; {} for an older run folder)."""
    scores = read_json(Path(run_dir) / "scores.json")
    orgs, behaviors = scores.get("organisms") or {}, scores.get("behaviors") or {}
    if not (orgs and behaviors):
        return {}
    pairs = {p["id"]: p for p in scores.get("pairs") or []}
    out: dict[str, dict[tuple[str, str], str]] = {"family": {}, "recipe": {}, "side": {}}
    for pid, p in pairs.items():
        if p["kind"] != "planted" or p.get("cross"):
            continue
        org = orgs.get(p["b"], {})
        for b in p["behaviors"]:
            meta = behaviors.get(b, {})
            out["family"][(pid, b)] = meta.get("family", "?")
            out["recipe"][(pid, b)] = {"lora": "narrow"}.get(org.get("recipe", "lora"), org.get("recipe", "?"))
            out["side"][(pid, b)] = "removed (side a)" if meta.get("side") == "a" else "added (side b)"
    return out


def null_alarms(run_dir: str | Path) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """({method: {null pair: share of its seeds with a flagged finding}}, {null pair: organism kind}) from runs.csv
    (a run without findings raised no alarm) and pair_results.csv (which runs succeeded)."""
    run_dir = Path(run_dir)
    scores = read_json(run_dir / "scores.json")
    orgs = scores.get("organisms") or {}
    kinds = {p["id"]: orgs.get(p["b"], {}).get("kind", "null") for p in scores.get("pairs") or []
             if p["kind"] == "null" and not p.get("cross")}
    flagged = {(r["method"], r["pair"], r["seed"]): int(r.get("flagged_a") or 0) + int(r.get("flagged_b") or 0)
               for r in read_csv(run_dir / "runs.csv")}
    per: dict[str, dict[str, list[float]]] = {}
    for r in read_csv(run_dir / "pair_results.csv"):
        if r["pair"] in kinds and r["status"] == "ok":
            per.setdefault(r["method"], {}).setdefault(r["pair"], []).append(float(flagged.get((r["method"], r["pair"], r["seed"]), 0) > 0))
    return {m: {p: float(np.mean(v)) for p, v in d.items()} for m, d in per.items()}, kinds


def breakdown_section(run_dir: str | Path, k: int = 5) -> list[str]:
    """Markdown: recall@k per family, recipe and side (added vs removed behaviors), and the null false-alarm rate per
    null kind; each cell is the mean over its units (pairs) with their count, so a cell of 2 units reads as such."""
    run_dir = Path(run_dir)
    groups = unit_groups(run_dir)
    if not groups:
        return []
    table = load_hit_table(run_dir, k)
    methods = sorted(table.methods, key=lambda m: (m in table.floors, -np.nan_to_num(table.recall(m), nan=-1.0), m))
    label = lambda m: f"{m} (floor)" if m in table.floors else m
    index = {u: i for i, u in enumerate(table.units)}
    lines = ["", "## Breakdowns", "",
             f"Recall@{k} (any channel) over the units of each group, and the null false-alarm rate (a flagged finding on the "
             "null pair) per null kind. A group's unit count is in its header; small groups have wide intervals."]
    for axis, title in (("family", "By family"), ("recipe", "By recipe"), ("side", "By side")):
        by = groups[axis]
        names = sorted(set(by.values()))
        if len(names) < 2:
            continue
        members = {g: [index[u] for u, gg in by.items() if gg == g and u in index] for g in names}
        lines += ["", f"### {title}", "", "| method | " + " | ".join(f"{g} ({len(members[g])})" for g in names) + " |",
                  "|---|" + "---|" * len(names)]
        for m in methods:
            cells = []
            for g in names:
                v = table.hits[m][members[g]] if members[g] else np.array([])
                v = v[~np.isnan(v)]
                cells.append(f"{v.mean():.2f}" if len(v) else "–")
            lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    alarms, kinds = null_alarms(run_dir)
    names = sorted(set(kinds.values()))
    if len(names) >= 2:
        lines += ["", "### Null false alarms by null kind", "",
                  "| method | " + " | ".join(f"{g} ({sum(1 for v in kinds.values() if v == g)})" for g in names) + " |",
                  "|---|" + "---|" * len(names)]
        for m in methods:
            cells = []
            for g in names:
                v = [x for p, x in (alarms.get(m) or {}).items() if kinds[p] == g]
                cells.append(f"{np.mean(v):.2f}" if v else "–")
            lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    return lines
