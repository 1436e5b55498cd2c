"""Deliberately bad control: random directions with the norm of the mean difference.

It must score at chance; every leaderboard shows it as the floor. Uniqueness is
a random number, and the flag rule flags the findings whose random uniqueness
exceeds `flag_quantile`, so it also shows what chance looks like for the
false-alarm metrics.

Across architectures (no shared space, no h_B - h_A) the floor is one-sided: each finding is
a random direction in one model's residual stream (alternately A and B, side set accordingly),
read as a projection of that model's activations, with the norm of its mean activation.
"""

from __future__ import annotations

import torch

from dataclasses import dataclass

from ..core import Finding, Method, MethodConfig, NotApplicableError, PairContext, register_method
from ._shared.difference import difference_readout


@dataclass
class RandomDirectionsConfig(MethodConfig):
    n: int = 20  # findings per run
    flag_quantile: float = 0.75  # flag the findings whose random uniqueness exceeds this
    layer: int | None = None  # residual index; None = the pair's middle layer


@register_method
class RandomDirections(Method):
    name = "random_directions"
    stochastic = True
    floor = True
    Config = RandomDirectionsConfig
    cfg: RandomDirectionsConfig

    def find(self, ctx: PairContext) -> list[Finding]:
        if not ctx.shared_space:
            return self._one_sided(ctx)
        if ctx.model_a.hidden_size != ctx.model_b.hidden_size:
            raise NotApplicableError("random difference directions need equal hidden sizes")
        layer = ctx.layer_or_middle(self.cfg.layer)
        la, lb = ctx.corpus.load(layer)
        keep = la.pos >= 1
        norm = (lb.acts - la.acts)[keep].mean(0).norm()
        gen = torch.Generator().manual_seed(1000 + ctx.seed)
        draws = []
        for _ in range(self.cfg.n):  # the same draws, in the same order, as one direction at a time
            v = torch.randn(la.acts.shape[1], generator=gen)
            draws.append((v / v.norm(), float(torch.rand((), generator=gen))))
        lenses = ctx.logit_lens_many(torch.stack([unit for unit, _ in draws]), "b") if draws else []
        out = []
        for i, ((unit, u), (ids, toks)) in enumerate(zip(draws, lenses)):
            out.append(Finding(id=f"rand{i}", uniqueness=u, flagged=u > self.cfg.flag_quantile,
                               readout=difference_readout(layer, unit), side="b", direction=unit * norm,
                               direction_layer=layer, tokens=toks, token_ids=ids))
        return out

    def _one_sided(self, ctx: PairContext) -> list[Finding]:
        from ..core import Readout

        layer = self.cfg.layer
        layer_a, layer_b = (layer, layer) if layer is not None else (ctx.middle_layer, ctx.middle_layer_b)
        la, lb = ctx.corpus.load(layer_a, layer_b)
        gen = torch.Generator().manual_seed(1000 + ctx.seed)
        out = []
        for i in range(self.cfg.n):
            side = "ab"[i % 2]
            acts = la if side == "a" else lb
            norm = acts.acts[acts.pos >= 1].mean(0).norm()
            v = torch.randn(acts.acts.shape[1], generator=gen)
            unit = v / v.norm()
            u = float(torch.rand((), generator=gen))
            ids, toks = ctx.logit_lens(unit, side)
            readout = Readout(layer_a=layer_a, layer_b=layer_b, kind="linear",
                              w_a=unit if side == "a" else None, w_b=unit if side == "b" else None)
            out.append(Finding(id=f"rand{i}{side}", uniqueness=u, flagged=u > self.cfg.flag_quantile, readout=readout,
                               side=side, direction=unit * norm, direction_layer=layer_a if side == "a" else layer_b,
                               tokens=toks, token_ids=ids))
        return out
