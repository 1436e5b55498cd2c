"""Deliberately bad control: random directions with the norm of the mean difference.

It must score at chance; every leaderboard shows it as the floor. Uniqueness is
a random number, and the flag rule flags the findings whose random uniqueness
exceeds `flag_quantile`, so it also shows what chance looks like for the
false-alarm metrics.
"""

from __future__ import annotations

import torch

from .base import Finding, Method, NotApplicableError, PairContext, register_method
from .mean_diff import difference_readout


@register_method
class RandomDirections(Method):
    name = "random_directions"
    stochastic = True

    def __init__(self, n: int = 20, flag_quantile: float = 0.75, layer: int | None = None):
        super().__init__(n=n, flag_quantile=flag_quantile, layer=layer)
        self.n, self.flag_quantile, self.layer = n, flag_quantile, layer

    def find(self, ctx: PairContext) -> list[Finding]:
        if ctx.model_a.hidden_size != ctx.model_b.hidden_size:
            raise NotApplicableError("random difference directions need equal hidden sizes")
        layer = self.layer if self.layer is not None else ctx.middle_layer
        la, lb = ctx.neutral.load(layer)
        keep = la.pos >= 1
        norm = (lb.acts - la.acts)[keep].mean(0).norm()
        gen = torch.Generator().manual_seed(1000 + ctx.seed)
        out = []
        for i in range(self.n):
            v = torch.randn(la.acts.shape[1], generator=gen)
            unit = v / v.norm()
            u = float(torch.rand((), generator=gen))
            ids, toks = ctx.logit_lens(unit, "b")
            out.append(Finding(id=f"rand{i}", uniqueness=u, flagged=u > self.flag_quantile,
                               readout=difference_readout(layer, unit), side="b", direction=unit * norm,
                               direction_layer=layer, tokens=toks, token_ids=ids))
        return out
