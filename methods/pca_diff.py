"""PCA of activation differences: the principal directions of per-token (h_B - h_A) at one layer.

At the middle layer (or `layer`), over the corpus tokens at positions >= 1, the top
`n_components` principal directions of the centred per-token differences, in order of explained
variance. Each finding's readout is the projection of the per-token difference onto its unit
direction (oriented so the mean difference along it is >= 0, i.e. towards B); its tokens are the
logit lens of the direction in model B. Uniqueness is the rms of the difference along the direction
relative to model A's mean activation norm (monotone in explained variance, and comparable across
pairs); flagged when that is >= `flag_threshold` (the same rule as `mean_diff`'s components).
`mean_diff` reports the first few of these components too; this method is PCA alone.
"""

from __future__ import annotations

import torch

from dataclasses import dataclass

from ..core import Finding, Method, MethodConfig, NotApplicableError, PairContext, register_method
from ..core.env import cpu_threads
from ..core.lens import lens
from ._shared.difference import difference_readout, corpus_difference, principal_directions


@dataclass
class PCADiffConfig(MethodConfig):
    n_components: int = 20
    flag_threshold: float = 0.05  # flag when the rms difference along the component >= this x mean |h_A|
    layer: int | None = None  # residual index; None = the pair's middle layer
    max_tokens: int = 200_000  # rows used for the SVD
    threads: int | str | None = "auto"  # torch CPU threads: auto = core/env.py pick_threads (every core under the diffbench command)


@register_method
class PCADiff(Method):
    name = "pca_diff"
    Config = PCADiffConfig
    cfg: PCADiffConfig

    def find(self, ctx: PairContext) -> list[Finding]:
        with cpu_threads(self.cfg.threads, ctx.device):
            return self._find(ctx)

    def _find(self, ctx: PairContext) -> list[Finding]:
        if ctx.model_a.hidden_size != ctx.model_b.hidden_size:
            raise NotApplicableError("PCA of activation differences needs a shared activation space (equal hidden sizes)")
        layer = ctx.layer_or_middle(self.cfg.layer)
        _, _, _, diff, scale = corpus_difference(ctx, layer)
        if diff.shape[0] < 2:
            raise NotApplicableError(f"only {diff.shape[0]} corpus tokens at positions >= 1")
        out = []
        comps = principal_directions(diff, self.cfg.n_components, self.cfg.max_tokens)
        lenses = lens(ctx.model_b, torch.stack([v for v, _, _ in comps])) if comps else []
        for i, ((v, rms, share), (ids, toks)) in enumerate(zip(comps, lenses)):
            uniq = rms / scale
            out.append(Finding(id=f"pc{i}", uniqueness=uniq, flagged=uniq >= self.cfg.flag_threshold,
                               readout=difference_readout(layer, v), side="b", direction=v * rms, direction_layer=layer,
                               tokens=toks, token_ids=ids,
                               info={"explained_variance": share, "rms": rms, "relative_rms": uniq, "component": float(i)}))
        return out
