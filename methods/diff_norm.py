"""Per-token difference norm ||h_B - h_A||: one finding whose readout is the norm itself.

A sanity baseline for trigger detection: a planted trigger that changes model B's residual stream
makes the per-prompt max of ||h_B - h_A|| larger on trigger prompts than on controls, whatever the
direction of the change. The readout is `Readout(kind="diff_norm")` at the middle layer (or
`layer`); with model B replaced by model A it is identically 0, so the scoring control always
passes. Uniqueness is the mean difference norm over the corpus tokens at positions >= 1
relative to model A's mean activation norm there; flagged when that is >= `flag_threshold`. No
direction and no tokens (the norm has neither).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import Finding, Method, MethodConfig, NotApplicableError, PairContext, Readout, register_method
from ._shared.difference import corpus_difference


@dataclass
class DiffNormConfig(MethodConfig):
    flag_threshold: float = 0.1  # flag when mean ||h_B - h_A|| >= this x mean |h_A| on the corpus
    layer: int | None = None  # residual index; None = the pair's middle layer


@register_method
class DiffNorm(Method):
    name = "diff_norm"
    Config = DiffNormConfig
    cfg: DiffNormConfig

    def find(self, ctx: PairContext) -> list[Finding]:
        if ctx.model_a.hidden_size != ctx.model_b.hidden_size:
            raise NotApplicableError("a difference norm needs a shared activation space (equal hidden sizes)")
        layer = ctx.layer_or_middle(self.cfg.layer)
        _, _, _, diff, scale = corpus_difference(ctx, layer)
        if diff.shape[0] == 0:
            raise NotApplicableError("no corpus tokens at positions >= 1")
        norms = diff.norm(dim=-1)
        uniq = float(norms.mean()) / max(scale, 1e-12)
        return [Finding(id="diff_norm", uniqueness=uniq, flagged=uniq >= self.cfg.flag_threshold,
                        readout=Readout(layer_a=layer, layer_b=layer, kind="diff_norm"), side="b",
                        info={"relative_norm": uniq, "mean_norm": float(norms.mean()), "p99_norm": float(norms.quantile(0.99)),
                              "mean_act_norm_a": scale})]
