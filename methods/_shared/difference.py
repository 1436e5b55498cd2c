"""The per-token difference h_B - h_A on the audit corpus: the rows, a readout along a direction, its principal
directions. Shared by the difference-based methods (mean_diff, pca_diff, diff_norm, random_directions, kl_diff,
dict_drift)."""

from __future__ import annotations

import torch

from ...core import PairContext, Readout


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
