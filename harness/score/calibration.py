"""The calibrated activation match: how high does a *random* readout of a finding's own family score?

A readout of the per-token difference h_B - h_A along any direction inherits the difference's norm,
which is larger on trigger prompts than on controls, so with a fixed AUROC threshold a random
direction "matches" a planted behavior (28% of random directions did on the full suite under the
old rule). The scorer therefore compares each finding with a null drawn from its own family:
random readouts of the same kind, structure (difference, one model, both models), activation,
input norm, bias, threshold and layers, whose weights are random directions with the finding's
weight norms, evaluated on the same probe activations. A finding matches only if its AUROC clears
`auroc_min` and its Monte-Carlo p-value against that null, (1 + #{null >= auroc}) / (draws + 1), is
at most alpha / K: a chance finding then matches with probability <= alpha / K, so a chance top-K
list matches anywhere with probability <= alpha.

The test statistic is the AUROC, with ties broken by the separation d' = (mean_T - mean_C) / pooled std
of the per-prompt scores. AUROC saturates: on the full suite 5-18% of random difference directions
separate T from C perfectly (AUROC 1.0) on most behaviors, so AUROC alone could never rank a finding
above them; d' says by how much a perfect separation separates. Any statistic gives a valid Monte-Carlo
test as long as the finding and its null draws are scored alike, which they are.

Cost: one matmul per family [tokens, d] x [d, draws]; the AUROCs of all draws come from one rank
computation. A family whose AUROC is invariant to the weights' scale and the bias (identity, ReLU or
|.| with no bias and no threshold, reading one model or the difference) shares one null per probe
set; other families (crosscoder latents, SAE latents) get their own, computed only for findings that
clear `auroc_min` (a finding below it cannot match whatever the null says).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata

from ...core import Readout


@dataclass(frozen=True)
class Family:
    """What a random readout must share with a finding's readout for its AUROC to be a fair null."""

    kind: str  # linear | diff_norm
    structure: str  # diff (w_a = -w_b) | a | b | both
    act: str
    input_norm: str
    layer_a: int
    layer_b: int
    norm_a: float = 0.0  # the remaining fields are 0 where the AUROC does not depend on them
    norm_b: float = 0.0
    bias: float = 0.0
    threshold: float = 0.0

    @property
    def reads_difference(self) -> bool:
        """A readout of h_B - h_A only: with B replaced by A it is constant, so the "model A" control is vacuous."""
        return self.kind == "diff_norm" or self.structure == "diff"


def family_of(r: Readout) -> Family:
    if r.kind == "diff_norm":
        return Family("diff_norm", "diff", "identity", r.input_norm, r.layer_a, r.layer_b)
    if r.w_a is not None and r.w_b is not None:
        diff = r.w_a.shape == r.w_b.shape and torch.allclose(r.w_a.float(), -r.w_b.float(), atol=1e-6, rtol=1e-5)
        structure = "diff" if diff else "both"
    else:
        structure = "a" if r.w_b is None else "b"
    norm_a = float(r.w_a.float().norm()) if r.w_a is not None else 0.0
    norm_b = float(r.w_b.float().norm()) if r.w_b is not None else 0.0
    if structure == "diff":
        norm_a = 0.0  # one direction: its norm is norm_b
    invariant = r.bias == 0 and (r.act != "relu" or r.threshold <= 0) and structure != "both"
    if invariant:  # act(s * z) ranks prompts as act(z) does for every s > 0
        return Family("linear", structure, r.act, r.input_norm, r.layer_a, r.layer_b)
    return Family("linear", structure, r.act, r.input_norm, r.layer_a, r.layer_b, norm_a, norm_b, float(r.bias),
                  float(r.threshold) if r.act == "relu" else 0.0)


def batch_auroc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each column of scores [n, m] (ties count half, as sklearn's roc_auc_score), non-finite
    scores handled as in scoring.safe_auroc."""
    s = np.nan_to_num(scores.astype(np.float64), nan=0.0, posinf=1e30, neginf=-1e30)
    pos = labels == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return np.full(s.shape[1], 0.5)
    ranks = rankdata(s, axis=0)
    return (ranks[pos].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def batch_dprime(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """d' = (mean_T - mean_C) / sqrt((var_T + var_C) / 2) of each column of scores [n, m]; non-finite scores (a prompt
    with no scored token) take the column's smallest finite value; a column without spread gives 0."""
    s = scores.astype(np.float64).copy()
    finite = np.isfinite(s)
    low = np.where(finite, s, np.inf).min(0)
    low = np.where(np.isfinite(low), low, 0.0)
    s = np.where(finite, s, low[None, :])
    pos = labels == 1
    if pos.sum() < 2 or (~pos).sum() < 2:
        return np.zeros(s.shape[1])
    mt, mc = s[pos].mean(0), s[~pos].mean(0)
    sd = np.sqrt((s[pos].var(0, ddof=1) + s[~pos].var(0, ddof=1)) / 2)
    return np.where(sd > 0, (mt - mc) / np.where(sd > 0, sd, 1.0), 0.0)


def per_prompt_max(z: torch.Tensor, text_idx: torch.Tensor, keep: torch.Tensor, n_prompts: int) -> torch.Tensor:
    """Max over each prompt's scored tokens of every column of z [tokens, m] -> [n_prompts, m]."""
    z = torch.where(keep[:, None], z, torch.full_like(z, float("-inf")))
    out = torch.full((n_prompts, z.shape[1]), float("-inf"), dtype=z.dtype)
    return out.scatter_reduce(0, text_idx[:, None].expand(-1, z.shape[1]), z, reduce="amax", include_self=True)


CHUNK = 2000  # null draws per matmul: the first chunk of each projection is cached, later ones are drawn on demand


def _unit_columns(d: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d, n, generator=g)
    return v / v.norm(dim=0, keepdim=True)


def _rms(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def at_least_as_good(null: tuple[np.ndarray, np.ndarray], auroc: float, dprime: float) -> int:
    """Null draws ordered at or above (auroc, d'): higher AUROC, or the same AUROC and d' at least as high."""
    na, nd = null
    tie = np.abs(na - auroc) <= 1e-12
    return int(((na > auroc + 1e-12) | (tie & (nd >= dprime - 1e-12))).sum())


@dataclass(frozen=True)
class NullTest:
    p: float  # Monte-Carlo p-value (1 + #{draws at least as good}) / (drawn + 1)
    quantile: float  # the (1 - level) quantile of the drawn null AUROCs
    drawn: int  # draws used: all of them, or fewer where the test stopped early (p > level already certain)


class NullSampler:
    """Random-readout nulls on one (pair, behavior) probe set; caches what families share.

    `xa`, `xb`: both models' probe activations per layer are fetched through `acts(side, layer)`;
    `keep`, `text_idx`, `labels` come from the probe set (the same tokens and prompts the finding is
    scored on). Draws come in chunks of CHUNK and a test stops as soon as its p-value can no longer
    reach the level, so a large null (20,000 draws by default) costs one chunk for almost every finding;
    the decision is the one the full null would give."""

    def __init__(self, acts, text_idx: torch.Tensor, keep: torch.Tensor, labels: np.ndarray, draws: int, seed: int = 0):
        self.acts, self.text_idx, self.keep, self.labels = acts, text_idx, keep, labels
        self.draws, self.seed = int(draws), int(seed)
        self._chunks: dict[Family, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._proj: dict[tuple, torch.Tensor] = {}

    def _projection(self, side: str, layer: int, input_norm: str, chunk: int) -> torch.Tensor:
        """x @ G for the side's probe activations (or the difference, side="diff") and the chunk's random unit columns G."""
        key = (side, layer, input_norm)
        if chunk == 0 and key in self._proj:
            return self._proj[key]
        norm = _rms if input_norm == "rms" else (lambda t: t.float())
        if side == "diff":
            x = norm(self.acts("b", layer)) - norm(self.acts("a", layer))
        else:
            x = norm(self.acts(side, layer))
        # the columns depend only on (side, width, seed, chunk): a finding's null does not depend on its layer's draw order
        salt = {"a": 1, "b": 2, "diff": 3}[side]
        n = min(CHUNK, self.draws - chunk * CHUNK)
        proj = x @ _unit_columns(x.shape[1], n, self.seed * 7919 + salt + 104_729 * chunk)
        if chunk == 0:
            if len(self._proj) >= 4:  # [tokens, CHUNK] each: keep memory bounded
                self._proj.pop(next(iter(self._proj)))
            self._proj[key] = proj
        return proj

    def _chunk(self, r: Readout, fam: Family, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """(AUROC, d') of one chunk of random readouts of r's family."""
        if fam.structure == "diff":
            z = self._projection("diff", r.layer_b, fam.input_norm, chunk) * (fam.norm_b or 1.0)
        elif fam.structure == "a":
            z = self._projection("a", r.layer_a, fam.input_norm, chunk) * (fam.norm_a or 1.0)
        elif fam.structure == "b":
            z = self._projection("b", r.layer_b, fam.input_norm, chunk) * (fam.norm_b or 1.0)
        else:
            z = (self._projection("a", r.layer_a, fam.input_norm, chunk) * fam.norm_a
                 + self._projection("b", r.layer_b, fam.input_norm, chunk) * fam.norm_b)
        z = z + fam.bias
        if fam.act == "relu":
            z = torch.where(z > max(fam.threshold, 0.0), z, torch.zeros_like(z))
        elif fam.act == "abs":
            z = z.abs()
        scores = per_prompt_max(z, self.text_idx, self.keep, len(self.labels)).numpy()
        return batch_auroc(self.labels, scores), batch_dprime(self.labels, scores)

    def test(self, r: Readout, auroc: float, dprime: float, level: float) -> NullTest:
        """Monte-Carlo test of a finding's (AUROC, d') against random readouts of its family at `level`.

        Chunks are drawn until the count of draws at least as good exceeds what a p-value <= level allows
        over all `draws` (then p > level is certain and the test stops) or every chunk is drawn."""
        fam = family_of(r)
        if fam.kind == "diff_norm":
            # no direction to randomise: the family is this one readout, which only says where the models differ;
            # its null is itself, so it can never beat it
            return NullTest(1.0, float(auroc), self.draws)
        chunks = self._chunks.setdefault(fam, [])
        n_chunks = math.ceil(self.draws / CHUNK)
        allowed = math.floor(level * (self.draws + 1) + 1e-9) - 1
        ahead, used = 0, 0
        while used < n_chunks:
            if used == len(chunks):
                chunks.append(self._chunk(r, fam, used))
            ahead += at_least_as_good(chunks[used], auroc, dprime)
            used += 1
            if ahead > allowed:
                break
        drawn = sum(len(c[0]) for c in chunks[:used])
        aurocs = np.concatenate([c[0] for c in chunks[:used]])
        return NullTest((1 + ahead) / (drawn + 1), null_quantile(aurocs, 1 - level), drawn)


class TokenNull:
    """The token channel's null: how early does the logit lens of a random direction show one of a behavior's
    keywords? Lens top-token lists of `draws` random unit directions, per model (the lens is scale-invariant and the
    same at every layer: W_U (g * v)). The statistic is rank-aware: a finding whose best keyword sits at rank r (1 =
    its top token) gets p(r) = (1 + #{random lists with a keyword at rank <= r}) / (draws + 1), a Monte-Carlo p-value
    of the statistic "best keyword rank", so a chance finding still matches with probability <= alpha/K whatever r
    is. A keyword that random lists often show somewhere in their top 20 can still count when a finding puts it
    first (rank-1 p is far smaller than rank-20 p); where even p(1) exceeds the level, the channel cannot show
    anything for the behavior."""

    def __init__(self, draws: int, top_tokens: int, seed: int = 0):
        self.draws, self.top_tokens, self.seed = int(draws), int(top_tokens), int(seed)
        self._ids: dict[str, torch.Tensor] = {}

    def lists(self, model) -> torch.Tensor:
        from ...core.lens import lens_ids

        if model.identity not in self._ids:
            d = model.hidden_size
            g = torch.Generator().manual_seed(self.seed)
            rows = []
            for start in range(0, self.draws, 1000):
                v = torch.randn(min(1000, self.draws - start), d, generator=g)
                rows.append(torch.tensor(lens_ids(model, v, self.top_tokens)))
            self._ids[model.identity] = torch.cat(rows)
        return self._ids[model.identity]

    def rank_p_values(self, model, keyword_ids: set[int]) -> tuple[float, ...]:
        """p(r) for r = 1..top_tokens (all 1.0 without keywords)."""
        if not keyword_ids:
            return (1.0,) * self.top_tokens
        return rank_p_values(self.lists(model), keyword_ids, self.draws)

    def p_value(self, model, keyword_ids: set[int]) -> float:
        """p at the last rank: the chance that a random list shows a keyword anywhere in its top tokens."""
        return self.rank_p_values(model, keyword_ids)[-1]


def rank_p_values(lists: torch.Tensor, keyword_ids: set[int], draws: int) -> tuple[float, ...]:
    """From random lens lists [draws, top]: p(r) = (1 + #{lists whose first keyword is at rank <= r}) / (draws + 1)."""
    hit = torch.isin(lists, torch.tensor(sorted(keyword_ids)))  # [draws, top]
    first_by_rank = hit.cumsum(dim=1).clamp(max=1).sum(dim=0)  # lists with a keyword within the first r, per r
    return tuple(float((1 + int(n)) / (draws + 1)) for n in first_by_rank)


def null_quantile(null: np.ndarray, level: float) -> float:
    return float(np.quantile(null, level, method="higher"))


def safe_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC with defined answers: a constant readout (or non-finite scores) gives 0.5.

    Rank-based (Mann-Whitney, ties count half): the same value as sklearn's roc_auc_score (a test checks it),
    without its ~1 ms of input validation per call, which dominated scoring time over tens of thousands of
    (finding, behavior) pairs."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0, posinf=1e30, neginf=-1e30)
    if len(set(labels.tolist())) < 2 or np.ptp(scores) == 0:
        return 0.5
    return float(batch_auroc(labels, scores[:, None])[0])
