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

from ..core import Finding, Method, MethodConfig, PairContext, register_method
from ._shared.difference import corpus_difference, difference_readout, principal_directions


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
    cfg: MeanDiffConfig

    def __init__(self, **params):
        super().__init__(**params)
        self.positions = tuple(self.cfg.positions)  # a list from YAML or the command line

    def find(self, ctx: PairContext) -> list[Finding]:
        ctx.require_shared_space("mean difference (h_B - h_A)")
        layer = ctx.layer_or_middle(self.cfg.layer)
        la, lb, keep, diff, scale = corpus_difference(ctx, layer)
        lo, hi = self.positions
        early = (la.pos[keep] >= lo) & (la.pos[keep] < hi)
        if not early.any():
            raise ValueError(f"no tokens at positions {lo}..{hi - 1} of the audit corpus")
        findings = []
        mean = diff[early].mean(0)
        findings.append(self._finding(ctx, "mean_diff", layer, mean, mean.norm().item() / scale, {"positions": f"{lo}-{hi - 1}"}))
        if self.cfg.n_pca > 0:
            for i, (v, rms, share) in enumerate(principal_directions(diff, self.cfg.n_pca, self.cfg.max_tokens)):
                findings.append(self._finding(ctx, f"pc{i}", layer, v * rms, rms / scale, {"explained_variance": share}))
        return findings

    def _finding(self, ctx: PairContext, fid: str, layer: int, vec: torch.Tensor, uniq: float, info: dict) -> Finding:
        unit = vec / vec.norm().clamp_min(1e-12)
        ids, toks = ctx.logit_lens(unit, "b")
        return Finding(id=fid, uniqueness=uniq, flagged=uniq >= self.cfg.flag_threshold, readout=difference_readout(layer, unit),
                       side="b", direction=vec, direction_layer=layer, tokens=toks, token_ids=ids,
                       info={"relative_norm": uniq, **info})
