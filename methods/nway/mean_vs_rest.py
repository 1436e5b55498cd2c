"""Mean against the rest: each member's activations against the mean of the other members' (mean_diff's N-way form).

At the middle layer (or `layer`), per corpus token at position >= 1 (position 0 is the attention sink, as in mean_diff)
and per member m, the difference h_m - mean_{j != m} h_j. Findings of member m: the mean of that difference over the
token positions [lo, hi) = `positions` of each text (the early tokens, as mean_diff) and the top `n_pca` principal
directions of the per-token differences (`principal_directions`, oriented towards m). Uniqueness = the size of the
difference along the direction (the mean's norm; a principal direction's rms) / the group's mean activation norm (the
members' mean |h| on those tokens: one scale, so members' findings rank together); flagged at `flag_threshold`, as
mean_diff. Tokens: the logit lens of the unit direction in member m's model.

Attribution rule: every finding of member m is attributed to {m}, `reads` = (m, m), readout the projection of member m's
activations on the unit direction (`w_a` None, `w_b` = unit: x_b is member m's, and scoring compares it with the base's
projection). Merge rule: all_pairs' (`merge_attributed` with the token key): findings of several members whose first
`merge_tokens` tokens are the same set are one difference attributed to the union, with the strongest one's readout,
direction and uniqueness, flagged if any was.

What the rest's mean can tell: a difference v in k of N members moves each of them by v (N - k) / (N - 1) from the rest
and each other member by -v k / (N - 1). The logit lens tells +v from -v, so the k members merge into one finding
attributed to them, and the others into a mirror finding along -v attributed to the complement, weaker when
k < N / 2, as strong when k = N / 2 (this baseline cannot tell a difference in half the group from its absence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core import Finding, MethodConfig, Readout
from ...core.nway import GroupContext, GroupFinding, NWayMethod, register_nway_method
from .._shared.difference import principal_directions
from .._shared.attribution import Attributed, merge_attributed, same_tokens


@dataclass
class MeanVsRestConfig(MethodConfig):
    positions: tuple[int, int] = (1, 8)  # token positions [lo, hi) of each corpus text averaged for the mean difference
    n_pca: int = 9  # principal directions of each member's per-token differences as further findings
    flag_threshold: float = 0.05  # flag when |difference along the direction| / the group's mean |h| >= this
    layer: int | None = None  # residual index; None = the group's middle layer
    max_tokens: int = 200_000  # rows used for the principal directions
    merge_tokens: int = 3  # findings whose first this-many tokens are the same set are merged (0: never merge)
    max_findings: int = 50


@register_nway_method
class MeanVsRest(NWayMethod):
    name = "mean_vs_rest"
    Config = MeanVsRestConfig
    cfg: MeanVsRestConfig

    def __init__(self, **params):
        super().__init__(**params)
        self.positions = tuple(self.cfg.positions)  # a list from YAML or the command line

    def find(self, ctx: GroupContext) -> list[GroupFinding]:
        c = self.cfg
        layer = ctx.layer_or_middle(c.layer)
        acts = ctx.corpus.load(layer)
        keep = acts[0].pos >= 1  # row-aligned: one member's positions serve all
        hs = [la.acts[keep].float() for la in acts]
        total = torch.zeros_like(hs[0])
        for h in hs:
            total += h
        scale = sum(h.norm(dim=-1).mean().item() for h in hs) / len(hs)
        lo, hi = self.positions
        pos = acts[0].pos[keep]
        early = (pos >= lo) & (pos < hi)
        if not early.any():
            raise ValueError(f"no tokens at positions {lo}..{hi - 1} of the audit corpus")
        runs = []
        for m, h in enumerate(hs):
            diff = h - (total - h) / (ctx.n - 1)  # h_m - the others' mean, per token
            mean = diff[early].mean(0)
            found = [("mean", mean, mean.norm().item() / scale, {"positions": f"{lo}-{hi - 1}"})]
            if c.n_pca > 0:
                found += [(f"pc{i}", v * rms, rms / scale, {"explained_variance": share})
                          for i, (v, rms, share) in enumerate(principal_directions(diff, c.n_pca, c.max_tokens))]
            units = torch.stack([vec / vec.norm().clamp_min(1e-12) for _, vec, _, _ in found])
            for (fid, vec, uniq, info), unit, (ids, toks) in zip(found, units, ctx.logit_lens_many(units, m)):
                f = Finding(id=fid, uniqueness=uniq, flagged=uniq >= c.flag_threshold,
                            readout=Readout(layer_a=layer, layer_b=layer, kind="linear", w_a=None, w_b=unit.clone()),
                            side="b", direction=vec, direction_layer=layer, tokens=toks, token_ids=ids,
                            info={"relative_norm": uniq, **info})
                runs.append(Attributed((m,), (m, m), str(m), f))
        return merge_attributed(runs, same_tokens(c.merge_tokens), self.name, "members")[: c.max_findings]
