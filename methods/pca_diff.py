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

from .base import Finding, Method, NotApplicableError, PairContext, register_method
from .crosscoder.common import cpu_threads
from .lens import lens
from .mean_diff import difference_readout, corpus_difference, principal_directions


@register_method
class PCADiff(Method):
    name = "pca_diff"

    def __init__(self, n_components: int = 20, flag_threshold: float = 0.05, layer: int | None = None,
                 max_tokens: int = 200_000, threads: int | str | None = "auto"):
        super().__init__(n_components=n_components, flag_threshold=flag_threshold, layer=layer, max_tokens=max_tokens, threads=threads)
        self.n_components, self.flag_threshold, self.layer, self.max_tokens = int(n_components), float(flag_threshold), layer, int(max_tokens)

    def find(self, ctx: PairContext) -> list[Finding]:
        with cpu_threads(self.config["threads"], ctx.device):
            return self._find(ctx)

    def _find(self, ctx: PairContext) -> list[Finding]:
        if ctx.model_a.hidden_size != ctx.model_b.hidden_size:
            raise NotApplicableError("PCA of activation differences needs a shared activation space (equal hidden sizes)")
        layer = self.layer if self.layer is not None else ctx.middle_layer
        _, _, _, diff, scale = corpus_difference(ctx, layer)
        if diff.shape[0] < 2:
            raise NotApplicableError(f"only {diff.shape[0]} corpus tokens at positions >= 1")
        out = []
        comps = principal_directions(diff, self.n_components, self.max_tokens)
        lenses = lens(ctx.model_b, torch.stack([v for v, _, _ in comps])) if comps else []
        for i, ((v, rms, share), (ids, toks)) in enumerate(zip(comps, lenses)):
            uniq = rms / scale
            out.append(Finding(id=f"pc{i}", uniqueness=uniq, flagged=uniq >= self.flag_threshold,
                               readout=difference_readout(layer, v), side="b", direction=v * rms, direction_layer=layer,
                               tokens=toks, token_ids=ids,
                               info={"explained_variance": share, "rms": rms, "relative_rms": uniq, "component": float(i)}))
        return out
