"""Per-member baseline: a two-model method run on (base, member) for every member, its findings merged into subsets.

The N-way form of a strong two-model baseline that diffs a fine-tune against its base ("weight_svd per model"): for
every member m the pair method (`pair_method`, default `weight_svd`) runs on `GroupContext.base_pair_context(m)`, the
ordinary `PairContext` of the shared base as model A and member m as model B. Attribution rule: every finding of the
run on m is attributed to {m}, whatever its side (a side-"a" finding is something of the base's that m lost: still a
difference in m), with `reads` = (m, m) (x_a = the base's activations, x_b = member m's: the pair's own readout,
unchanged). Merge rule: all_pairs' (`merge_attributed` with the token key): findings whose first `merge_tokens`
logit-lens tokens are the same set, of any members, are one difference attributed to the union of their members, with
the readout, direction, tokens, `reads` and uniqueness of the highest-uniqueness one, flagged if any was; a finding
without tokens stays on its own. A group without a base raises `NotApplicableError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...core import MethodConfig
from ...core.nway import GroupContext, GroupFinding, NWayMethod, register_nway_method
from .._shared.attribution import Attributed, merge_attributed, pair_method_class, same_tokens


@dataclass
class PerMemberConfig(MethodConfig):
    pair_method: str = "weight_svd"  # a registered two-model method, run on (base, member) for every member
    pair_params: dict[str, Any] = field(default_factory=dict)  # its config overrides
    merge_tokens: int = 3  # findings whose first this-many tokens are the same set are merged (0: never merge)
    max_findings: int = 50


@register_nway_method
class PerMember(NWayMethod):
    name = "per_member"
    Config = PerMemberConfig
    cfg: PerMemberConfig

    def __init__(self, **params: Any):
        super().__init__(**params)
        pair_cls = pair_method_class(self.cfg.pair_method)
        # a floor's per-member form is an N-way floor, with the floor's seeds (as all_pairs)
        self.floor, self.stochastic = pair_cls.floor, pair_cls.stochastic

    def find(self, ctx: GroupContext) -> list[GroupFinding]:
        method = pair_method_class(self.cfg.pair_method)(**self.cfg.pair_params)
        runs = [Attributed((m,), (m, m), str(m), f) for m in range(ctx.n) for f in method.find(ctx.base_pair_context(m))]
        merged = merge_attributed(runs, same_tokens(self.cfg.merge_tokens), f"{self.name}:{self.cfg.pair_method}", "members")
        return merged[: self.cfg.max_findings]
