"""All-pairs baseline: a two-model method run on every ordered pair of members, its findings merged into subsets.

The baseline an N-way method must beat. For every ordered pair (i, j), i != j, the pair method (`pair_method`,
default `mean_diff`) runs on the ordinary `PairContext` of member i as model A and member j as model B (the group's
own stores). Attribution rule: a finding on side "b" of (i, j) is attributed to {j}, on side "a" to {i}, on "both"
to {i, j}. Merge rule: findings whose first `merge_tokens` logit-lens tokens are the same set (any pairs, any sides)
are one difference, attributed to the union of their attributions; the merged finding keeps the readout, direction
and tokens of its highest-uniqueness member (`reads` = that pair), that uniqueness, and is flagged if any member
was. A finding without tokens (or `merge_tokens: 0`) stays on its own. Ordered pairs, because most pair methods
report on side "b" only: with i < j alone, member 0 could never be attributed anything. The merge (`merge_attributed`,
methods/_shared/attribution.py, on findings already attributed) is the other N-way baselines' too: per_member and mean_vs_rest with this token key,
logprob_vs_rest with (text, side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...core import Finding, MethodConfig
from ...core.nway import GroupContext, GroupFinding, NWayMethod, register_nway_method
from .._shared.attribution import Attributed, merge_attributed, pair_method_class, same_tokens

ATTRIBUTION = {"a": lambda i, j: (i,), "b": lambda i, j: (j,), "both": lambda i, j: tuple(sorted({i, j}))}


@dataclass
class AllPairsConfig(MethodConfig):
    pair_method: str = "mean_diff"  # a registered two-model method, run on every ordered pair of members
    pair_params: dict[str, Any] = field(default_factory=dict)  # its config overrides
    merge_tokens: int = 3  # findings whose first this-many tokens are the same set are merged (0: never merge)
    max_findings: int = 50


def merge_pair_findings(runs: list[tuple[int, int, Finding]], merge_tokens: int, prefix: str) -> list[GroupFinding]:
    """The merge rule (module docstring) on (i, j, finding of pair i -> j) triples, ranked by uniqueness."""
    attributed = [Attributed(ATTRIBUTION[f.side](i, j), (i, j), f"{i}>{j}", f) for i, j, f in runs]
    return merge_attributed(attributed, same_tokens(merge_tokens), prefix, "pairs")


@register_nway_method
class AllPairs(NWayMethod):
    name = "all_pairs"
    Config = AllPairsConfig
    cfg: AllPairsConfig

    def __init__(self, **params: Any):
        super().__init__(**params)
        pair_cls = pair_method_class(self.cfg.pair_method)
        # a floor's all-pairs form is the N-way floor, with the floor's seeds (chance is estimated, not guessed)
        self.floor, self.stochastic = pair_cls.floor, pair_cls.stochastic

    def find(self, ctx: GroupContext) -> list[GroupFinding]:
        method = pair_method_class(self.cfg.pair_method)(**self.cfg.pair_params)
        runs = [(i, j, f) for j in range(ctx.n) for i in range(ctx.n) if i != j
                for f in method.find(ctx.pair_context(i, j))]
        return merge_pair_findings(runs, self.cfg.merge_tokens, f"{self.name}:{self.cfg.pair_method}")[: self.cfg.max_findings]
