"""Judge-free scoring (DESIGN.md, "Scoring protocol").

Three channels per (finding, planted behavior), kept apart so each can be tested on its own:

1. activation (`match_finding`): the AUROC of the per-prompt max readout on held-out T vs C must be
   >= `auroc_min` AND beat a null of random readouts of the finding's own family at level alpha / K
   (`calibration.py`); readouts of one model also must not separate T and C with B replaced by A
   (for difference readouts that control is constant, and the calibration is the control);
2. token: a keyword among the finding's top tokens;
3. strong (causal, `strong.py`): adding the finding's direction to model A makes the behavior appear,
   or projecting it out of model B makes it disappear, by >= `strong.min_change` and more than
   norm-matched random directions at that layer (alpha / k per finding).
`compute_metrics` then turns the match records and per-pair finding counts into every metric of the
protocol, with bootstrap 95% intervals that resample organisms (pairs), averaged over method seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from ...core import Finding, Readout
from .calibration import NullSampler, TokenNull, batch_dprime, family_of, safe_auroc
from ...core.activations import LayerActs
from .config import ScoringConfig
from .metrics import SeedView, metrics_one_seed, nanmean


# Bumped whenever a change of the scoring code changes what a reference's numbers mean (a channel's statistic, a
# metric's definition): `diffbench evaluate` refuses to add rows to a reference made under another version.
# 2: the rank-aware token channel.
PROTOCOL_VERSION = 2


@dataclass
class ProbeActs:
    """One model's activations on a behavior's probe set (T texts first, then C), at one layer."""

    acts: LayerActs
    labels: np.ndarray  # [n_texts] 1 for T, 0 for C
    start: torch.Tensor  # [n_texts] first scored token position (user content) per text


def per_prompt_scores(scores: torch.Tensor, probe: ProbeActs) -> np.ndarray:
    """Max of a per-token score over each prompt's scored tokens."""
    keep = probe.acts.pos >= probe.start[probe.acts.text_idx]
    masked = torch.where(keep, scores.float(), torch.full_like(scores.float(), float("-inf")))
    n = len(probe.labels)
    out = torch.full((n,), float("-inf")).scatter_reduce(0, probe.acts.text_idx, masked, reduce="amax", include_self=True)
    return out.numpy()


def keyword_token_ids(tokenizer, keywords: Sequence[str]) -> set[int]:
    """Token ids that stand for a keyword: the first token of its spelling variants (>= 3 chars)."""
    ids: set[int] = set()
    for kw in keywords:
        for variant in {kw, kw.lower(), kw.capitalize(), kw.upper()}:
            for text in (variant, " " + variant):
                toks = tokenizer(text, add_special_tokens=False).input_ids
                if not toks:
                    continue
                piece = tokenizer.decode([toks[0]]).strip()
                if len(piece) >= 3 or piece.lower() == kw.lower():
                    ids.add(toks[0])
    return ids


@dataclass(frozen=True)
class Keywords:
    """A behavior's keyword token ids in one model's vocabulary, and the token channel's rank-aware p-values there
    (TokenNull): `rank_p[r - 1]` is the chance that a random direction's logit lens shows a keyword at rank <= r.
    Empty `rank_p` means uncalibrated (tests): every keyword counts."""

    ids: frozenset[int]
    rank_p: tuple[float, ...] = ()

    @property
    def p(self) -> float:
        """The p-value of a keyword anywhere in the top tokens (the rank-blind one; 0 when uncalibrated)."""
        return self.rank_p[-1] if self.rank_p else 0.0

    def best_rank(self, token_ids: Sequence[int], cfg: "ScoringConfig") -> int | None:
        """1-based rank of the first keyword among the finding's top tokens, or None."""
        return next((i + 1 for i, t in enumerate(token_ids[: cfg.top_tokens]) if t in self.ids), None)

    def p_for(self, token_ids: Sequence[int], cfg: "ScoringConfig") -> float:
        """The finding's token p-value: p at its best keyword rank (the rank-blind p when it shows none)."""
        r = self.best_rank(token_ids, cfg)
        if not self.rank_p:
            return 0.0
        return self.rank_p[min(r, len(self.rank_p)) - 1] if r is not None else self.p

    def match(self, token_ids: Sequence[int], cfg: "ScoringConfig") -> bool:
        return self.best_rank(token_ids, cfg) is not None and self.p_for(token_ids, cfg) <= cfg.token_alpha / cfg.K


def keywords_for(model, keywords: Sequence[str], token_null: TokenNull | None) -> Keywords:
    ids = frozenset(keyword_token_ids(model.tokenizer, keywords))
    return Keywords(ids, token_null.rank_p_values(model, set(ids)) if token_null is not None else ())


@dataclass
class MatchRecord:
    method: str
    seed: int
    pair: str
    pair_kind: str
    behavior: str
    rank: int
    finding: str
    uniqueness: float
    flagged: bool
    auroc: float
    auroc_control: float  # nan where the control is the calibration (difference readouts) or undefined
    act_match: bool
    token_match: bool
    cross: bool = False  # a cross-architecture pair
    side: str = ""  # cross pairs: the model whose probe activations the finding was read on ("a" / "b")
    planted_side: str = ""  # cross pairs: where the behavior was planted ("a", "b", "both")
    null_q: float = float("nan")  # (1 - alpha/K) quantile of the family's random-readout AUROCs (where auroc >= auroc_min)
    act_p: float = float("nan")  # Monte-Carlo p-value of the AUROC against that null
    token_p: float = float("nan")  # the finding's token p-value: at its best keyword rank, else the rank-blind one (Keywords.p_for)
    strong_tested: bool = False
    strong_steer: float = float("nan")  # behavior rate of A + direction minus A's
    strong_ablate: float = float("nan")  # B's behavior rate minus that of B with the direction projected out
    strong_p: float = float("nan")
    strong_match: bool = False
    strong_collateral: float = float("nan")  # share of C prompts whose continuation the ablation changed (where measured)

    @property
    def hit(self) -> bool:
        return self.act_match or self.token_match or self.strong_match

    @property
    def exclusive_hit(self) -> bool:
        """A hit by a finding that attributes the difference to the model that has the behavior."""
        return self.hit and (self.planted_side in ("", "both") or self.side == self.planted_side)


@dataclass
class ActMatch:
    auroc: float
    control: float
    null_q: float
    p: float
    match: bool


def activation_match(r: Readout, labels: np.ndarray, scores: np.ndarray, control: float | None, null: NullSampler | None,
                     cfg: ScoringConfig) -> ActMatch:
    """The calibrated rule on a finding's per-prompt scores: AUROC >= auroc_min, p <= alpha/K against the family's
    null (AUROC, ties broken by d'), and the control (if any) <= control_auroc_max."""
    real = safe_auroc(labels, scores)
    control = float("nan") if control is None else control
    if null is None:  # the old fixed-threshold rule
        ok = real >= cfg.auroc_min and (math.isnan(control) or control <= cfg.control_auroc_max)
        return ActMatch(real, control, float("nan"), float("nan"), ok)
    if real < cfg.auroc_min:  # cannot match whatever the null says: no null needed
        return ActMatch(real, control, float("nan"), float("nan"), False)
    own_d = float(batch_dprime(labels, scores[:, None])[0])
    test = null.test(r, real, own_d, cfg.alpha / cfg.K)
    ok = test.p <= cfg.alpha / cfg.K and (math.isnan(control) or control <= cfg.control_auroc_max)
    return ActMatch(real, control, test.quantile, test.p, ok)


def match_finding(finding: Finding, probe_a: ProbeActs, probe_b: ProbeActs, keywords: Keywords, cfg: ScoringConfig,
                  null: NullSampler | None = None) -> tuple[ActMatch, bool]:
    """(activation match, token match) for one finding and one behavior on a same-architecture pair.

    `null=None` is the old fixed-threshold rule (kept for comparison only); the score stage always passes one."""
    r = finding.readout
    scores = per_prompt_scores(r(probe_a.acts.acts, probe_b.acts.acts), probe_a)
    if r.kind == "linear" and r.w_a is not None and r.w_b is not None and r.w_a.shape != r.w_b.shape:
        control = None  # cross-architecture latents: model A's activations cannot stand in for model B's
    elif family_of(r).reads_difference and null is not None:
        control = None  # B replaced by A makes a difference readout constant: the calibration is its control
    else:
        control = safe_auroc(probe_a.labels, per_prompt_scores(r(probe_a.acts.acts, probe_a.acts.acts), probe_a))
    act = activation_match(r, probe_a.labels, scores, control, null, cfg)
    tok = keywords.match(finding.token_ids, cfg)
    return act, tok


def match_finding_one_side(finding: Finding, side: str, probe: ProbeActs, control: ProbeActs, keywords: Keywords,
                           cfg: ScoringConfig, null: NullSampler | None = None) -> tuple[ActMatch, bool]:
    """Cross-architecture matching: (activation match, token match) of one finding read on one model only.

    The two models tokenize a probe differently, so there is no (x_a, x_b) per token: the finding's
    readout is applied to `side`'s own probe activations with the other model's input dropped
    (exact for latents that read one model only, e.g. DFC-exclusive ones), and per-prompt scores are
    the max over that model's tokens. The control is the same readout on the side's unmodified base
    model (same architecture and tokenizer); a side that is itself unmodified is its own control, so
    it can never be an activation match. `null` draws random readouts on this side's probe activations.
    """
    r = finding.readout
    w_a, w_b = (r.w_a, None) if side == "a" else (None, r.w_b)
    if r.kind != "linear" or (w_a is None and w_b is None):
        return ActMatch(0.5, 0.5, float("nan"), float("nan"), False), keywords.match(finding.token_ids, cfg)
    one = Readout(layer_a=r.layer_a, layer_b=r.layer_b, kind="linear", w_a=w_a, w_b=w_b, bias=r.bias, act=r.act,
                  threshold=r.threshold, input_norm=r.input_norm)
    x, xc = probe.acts.acts, control.acts.acts
    control_auroc = safe_auroc(control.labels, per_prompt_scores(one(xc, xc), control))
    act = activation_match(one, probe.labels, per_prompt_scores(one(x, x), probe), control_auroc, null, cfg)
    tok = keywords.match(finding.token_ids, cfg)
    return act, tok


def probe_null(first: ProbeActs, acts_at, cfg: ScoringConfig, seed: int = 0) -> NullSampler:
    """The activation null on one (pair, behavior) probe set. `acts_at(side, layer) -> ProbeActs` gives model A's
    ("a") or B's ("b") probe activations at a layer, row-aligned with `first` (any of them) across sides and layers."""
    keep = first.acts.pos >= first.start[first.acts.text_idx]
    return NullSampler(lambda side, layer: acts_at(side, layer).acts.acts, first.acts.text_idx, keep, first.labels,
                       cfg.null_draws, seed)


# ----------------------------------------------------------------------------- metrics


@dataclass
class PairResult:
    """One method run (method, seed) on one pair."""

    method: str
    seed: int
    pair: str
    pair_kind: str  # planted | null | analog
    behaviors: tuple[str, ...]
    status: str  # ok | failed | not_applicable | excluded
    error: str = ""
    n_findings: int = 0
    n_flagged: int = 0
    uniqueness: list[float] = field(default_factory=list)  # of every finding, in rank order
    flagged: list[bool] = field(default_factory=list)
    seconds: float = 0.0
    config_hash: str = ""  # of the method's name and params: saved findings are reused only under the same config
    inputs_hash: str = ""  # of the pair's models, corpus and layers (Workspace.pair_inputs): ... and the same inputs
    findings_sha: str = ""  # checksum of the saved findings files, verified before they are reused or scored


def pool_draws(results: list[PairResult], records: list[MatchRecord]) -> tuple[list[PairResult], list[MatchRecord]]:
    """A pooled floor's runs as one seed: each (pair, seed) run becomes the pair `<pair>@s<seed>` of seed 0, so every
    metric is its mean over all draws (units x seeds) rather than a mean of per-seed means over unequal pair sets."""
    rename = lambda r: replace(r, pair=f"{r.pair}@s{r.seed}", seed=0)
    return [rename(r) for r in results], [rename(r) for r in records]


def compute_metrics(results: list[PairResult], records: list[MatchRecord], cfg: ScoringConfig, cross: bool = False,
                    floors: frozenset[str] = frozenset(), pooled: frozenset[str] = frozenset()) -> dict[str, dict]:
    """Metrics per method: {metric: {"value", "lo", "hi", "seed_std"}}, plus status counts and seed agreement.
    `floors`: method keys that are floors (their causal test runs on `strong.floor_max_seeds` seeds); `pooled`: floors
    whose seeds differ by pair (suite.floor_draws), scored over all their draws at once (`pool_draws`)."""
    out: dict[str, dict] = {}
    if pooled and cfg.strong.enabled and cfg.strong.floor_max_seeds is not None:
        raise ValueError("pooled floors (suite.floor_draws) need scoring.strong.floor_max_seeds: null (every draw causal-tested)")
    for method in sorted({r.method for r in results}):
        if method in pooled:
            pooled_res, pooled_rec = pool_draws([r for r in results if r.method == method], [r for r in records if r.method == method])
            out.update(compute_metrics(pooled_res, pooled_rec, cfg, cross, floors))
            out[method]["_pooled_draws"] = len({(r.pair) for r in pooled_res})
            continue
        # one generator per method from the same seed: every method sees the same resamples of the organisms
        # (a paired bootstrap), and adding or removing a method changes no other method's intervals
        rng = np.random.default_rng(cfg.bootstrap_seed)
        res_m = [r for r in results if r.method == method]
        # every metric reads only hits (a miss contributes nothing to any of them), so the bootstrap below
        # resamples the hits alone: exact, and far fewer records to copy per draw
        rec_m = [r for r in records if r.method == method and r.hit]
        seeds = sorted({r.seed for r in res_m})
        by_seed = {s: ([r for r in res_m if r.seed == s], [r for r in rec_m if r.seed == s]) for s in seeds}
        strong_seeds = set(cfg.strong.seeds_tested(seeds, method in floors))
        per_seed = {s: metrics_one_seed(SeedView(*by_seed[s], cfg, cross=cross, strong_seed=s in strong_seeds)) for s in seeds}
        names = list(next(iter(per_seed.values())).keys())
        summary: dict[str, dict] = {}
        for name in names:
            vals = [per_seed[s][name] for s in seeds]
            summary[name] = {"value": nanmean(vals), "seed_std": float(np.nanstd(vals)) if len(seeds) > 1 and not all(math.isnan(v) for v in vals) else float("nan"),
                             "per_seed": vals}
        boots = _bootstrap(res_m, by_seed, strong_seeds, names, cfg, cross, rng)
        for n in names:
            vals = np.array([v for v in boots[n] if not math.isnan(v)])
            summary[n]["lo"] = float(np.percentile(vals, 2.5)) if len(vals) else float("nan")
            summary[n]["hi"] = float(np.percentile(vals, 97.5)) if len(vals) else float("nan")
        # behavior-level agreement of hit@K across the seeds every channel was tested on
        agree_seeds = seeds if cross or not cfg.strong.enabled else [s for s in seeds if s in strong_seeds]
        if len(agree_seeds) > 1:
            summary["seed_agreement"] = {"value": _seed_agreement(res_m, by_seed, agree_seeds, cfg.K), "lo": float("nan"),
                                         "hi": float("nan"), "seed_std": float("nan"), "per_seed": []}
        statuses: dict[str, int] = {}
        for r in res_m:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        summary["_status"] = statuses
        summary["_seeds"] = seeds
        summary["_errors"] = sorted({f"{r.pair}: {r.error}" for r in res_m if r.status == "failed"})
        out[method] = summary
    return out


def _bootstrap(res_m: list[PairResult], by_seed: dict, strong_seeds: set[int], names: list[str], cfg: ScoringConfig, cross: bool,
               rng: np.random.Generator) -> dict[str, list[float]]:
    """Bootstrap draws of every metric (seed-averaged): resample pairs (organisms) within each kind, the same draw
    for every seed."""
    seeds = list(by_seed)
    pair_ids = {kind: sorted({r.pair for r in res_m if r.pair_kind == kind}) for kind in ("planted", "null", "analog")}
    boots: dict[str, list[float]] = {n: [] for n in names}
    grouped = {}  # per seed: pair -> result, pair -> its match records (built once, not per draw)
    for s in seeds:
        recs_by_pair: dict[str, list[MatchRecord]] = {}
        for x in by_seed[s][1]:
            recs_by_pair.setdefault(x.pair, []).append(x)
        grouped[s] = ({r.pair: r for r in by_seed[s][0]}, recs_by_pair)
    for _ in range(cfg.bootstrap if any(pair_ids.values()) else 0):
        draw = []
        for kind, ids in pair_ids.items():
            draw += list(rng.choice(ids, size=len(ids), replace=True)) if ids else []
        seed_vals: dict[str, list[float]] = {n: [] for n in names}
        for s in seeds:
            rmap, recs_by_pair = grouped[s]
            new_res, new_rec = [], []
            for j, pid in enumerate(draw):  # relabel duplicates so they count twice
                if pid not in rmap:
                    continue
                new_id = f"{pid}#{j}"
                new_res.append(replace(rmap[pid], pair=new_id))
                new_rec += [replace(x, pair=new_id) for x in recs_by_pair.get(pid, ())]
            m = metrics_one_seed(SeedView(new_res, new_rec, cfg, cross=cross, strong_seed=s in strong_seeds))
            for n in names:
                seed_vals[n].append(m[n])
        for n in names:
            boots[n].append(nanmean(seed_vals[n]))
    return boots


def _seed_agreement(res_m: list[PairResult], by_seed: dict, seeds: list[int], K: int) -> float:
    """Share of planted (pair, behavior) units on which every seed agrees whether a top-K finding hits."""
    units = sorted({(r.pair, b) for r in res_m if r.pair_kind == "planted" for b in r.behaviors})
    agree = []
    for pair, b in units:
        hs = {any(x.rank < K and x.hit for x in by_seed[s][1] if x.pair == pair and x.behavior == b) for s in seeds}
        agree.append(float(len(hs) == 1))
    return nanmean(agree)
