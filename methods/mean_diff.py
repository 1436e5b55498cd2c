"""Mean activation difference (activation-difference lens, Minder et al. 2025) plus PCA of differences.

At the middle layer: the mean of (h_B - h_A) over the first few token positions
of audit corpus is the first finding; the top principal directions of the
per-token differences are further findings. Each finding's readout is the
projection of the per-token difference onto its unit direction; its tokens are
the logit lens of the direction in model B. Uniqueness is the size of the
difference along the direction relative to the mean activation norm of model A;
the native flag rule is uniqueness >= `flag_threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import Finding, Method, MethodConfig, PairContext, Readout, register_method


def difference_readout(layer: int, unit: torch.Tensor) -> Readout:
    return Readout(layer_a=layer, layer_b=layer, kind="linear", w_a=-unit, w_b=unit.clone())


def corpus_difference(ctx: PairContext, layer: int):
    """(la, lb, keep, diff, scale) at `layer` of the audit corpus: both models' rows, the mask of rows
    at position >= 1 (position 0 carries a massive attention-sink activation in SmolLM2), the
    per-token differences h_B - h_A on those rows, and model A's mean activation norm there."""
    la, lb = ctx.corpus.load(layer)
    keep = la.pos >= 1
    diff = (lb.acts - la.acts)[keep]
    scale = la.acts[keep].norm(dim=-1).mean().item()
    return la, lb, keep, diff, scale


def principal_directions(diff: torch.Tensor, n: int, max_tokens: int = 200_000) -> list[tuple[torch.Tensor, float, float]]:
    """Top `n` principal directions of per-token differences [N, d] (centred, first `max_tokens` rows),
    as (unit vector oriented so that the mean difference along it is >= 0, rms along it, share of
    the variance), in order of explained variance."""
    x = diff[:max_tokens]
    # eigendecomposition of the covariance, accumulated in float64 in chunks (~5x faster than an SVD of
    # the rows on one CPU thread, same directions)
    mu = x.double().mean(0)
    cov = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for start in range(0, x.shape[0], 16384):
        xc = x[start : start + 16384].double() - mu
        cov += xc.t() @ xc
    evals, evecs = torch.linalg.eigh(cov / max(1, x.shape[0] - 1))
    var = evals.flip(0).clamp(min=0).float()
    vh = evecs.flip(1).t().float()
    out = []
    for i in range(min(n, vh.shape[0], x.shape[0])):
        v = vh[i]
        if (diff @ v).mean() < 0:  # orient towards B
            v = -v
        out.append((v, var[i].sqrt().item(), float(var[i] / var.sum())))
    return out


@dataclass
class MeanDiffConfig(MethodConfig):
    positions: tuple[int, int] = (1, 8)  # token positions [lo, hi) of each corpus text averaged for the mean difference
    n_pca: int = 9  # principal directions of per-token differences as further findings
    flag_threshold: float = 0.05  # flag when |difference along the direction| / mean |h_A| >= this
    layer: int | None = None  # residual index; None = the pair's middle layer
    max_tokens: int = 200_000  # rows used for the principal directions


@register_method
class MeanDiff(Method):
    name = "mean_diff"
    Config = MeanDiffConfig

    def __init__(self, **params):
        super().__init__(**params)
        self.positions = tuple(self.cfg.positions)
        self.n_pca = self.cfg.n_pca
        self.flag_threshold = self.cfg.flag_threshold
        self.layer = self.cfg.layer
        self.max_tokens = self.cfg.max_tokens

    def find(self, ctx: PairContext) -> list[Finding]:
        ctx.require_shared_space("mean difference (h_B - h_A)")
        layer = self.layer if self.layer is not None else ctx.middle_layer
        la, lb, keep, diff, scale = corpus_difference(ctx, layer)
        lo, hi = self.positions
        early = (la.pos[keep] >= lo) & (la.pos[keep] < hi)
        if not early.any():
            raise ValueError(f"no tokens at positions {lo}..{hi - 1} of the audit corpus")
        findings = []
        mean = diff[early].mean(0)
        findings.append(self._finding(ctx, "mean_diff", layer, mean, mean.norm().item() / scale, {"positions": f"{lo}-{hi - 1}"}))
        if self.n_pca > 0:
            for i, (v, rms, share) in enumerate(principal_directions(diff, self.n_pca, self.max_tokens)):
                findings.append(self._finding(ctx, f"pc{i}", layer, v * rms, rms / scale, {"explained_variance": share}))
        return findings

    def _finding(self, ctx: PairContext, fid: str, layer: int, vec: torch.Tensor, uniq: float, info: dict) -> Finding:
        unit = vec / vec.norm().clamp_min(1e-12)
        ids, toks = ctx.logit_lens(unit, "b")
        return Finding(id=fid, uniqueness=uniq, flagged=uniq >= self.flag_threshold, readout=difference_readout(layer, unit),
                       side="b", direction=vec, direction_layer=layer, tokens=toks, token_ids=ids,
                       info={"relative_norm": uniq, **info})
