"""All-pairs baseline: a two-model method run on every ordered pair of members, its findings merged into subsets.

The baseline an N-way method must beat. For every ordered pair (i, j), i != j, the pair method (`pair_method`,
default `mean_diff`) runs on the ordinary `PairContext` of member i as model A and member j as model B (the group's
own stores). Attribution rule: a finding on side "b" of (i, j) is attributed to {j}, on side "a" to {i}, on "both"
to {i, j}. Merge rule: findings whose first `merge_tokens` logit-lens tokens are the same set (any pairs, any sides)
are one difference, attributed to the union of their attributions; the merged finding keeps the readout, direction
and tokens of its highest-uniqueness member (`reads` = that pair), that uniqueness, and is flagged if any member
was. A finding without tokens (or `merge_tokens: 0`) stays on its own. Ordered pairs, because most pair methods
report on side "b" only: with i < j alone, member 0 could never be attributed anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...core import METHODS, Finding, MethodConfig
from ...core.nway import GroupContext, GroupFinding, NWayMethod, register_nway_method

ATTRIBUTION = {"a": lambda i, j: (i,), "b": lambda i, j: (j,), "both": lambda i, j: tuple(sorted({i, j}))}


@dataclass
class AllPairsConfig(MethodConfig):
    pair_method: str = "mean_diff"  # a registered two-model method, run on every ordered pair of members
    pair_params: dict[str, Any] = field(default_factory=dict)  # its config overrides
    merge_tokens: int = 3  # findings whose first this-many tokens are the same set are merged (0: never merge)
    max_findings: int = 50


def merge_pair_findings(runs: list[tuple[int, int, Finding]], merge_tokens: int, prefix: str) -> list[GroupFinding]:
    """The merge rule (module docstring) on (i, j, finding of pair i -> j) triples, ranked by uniqueness."""
    groups: dict[Any, list[tuple[int, int, Finding]]] = {}
    for i, j, f in runs:
        key = frozenset(f.token_ids[:merge_tokens]) if merge_tokens > 0 and f.token_ids else (i, j, f.id)
        groups.setdefault(key, []).append((i, j, f))
    out = []
    for members in groups.values():
        i, j, rep = max(members, key=lambda r: float(r[2].uniqueness))
        models = tuple(sorted({m for a, b, f in members for m in ATTRIBUTION[f.side](a, b)}))
        info = {**rep.info, "pairs": ",".join(f"{a}>{b}" for a, b, _ in members), "n_pairs": float(len(members))}
        out.append(GroupFinding(
            id=f"{prefix}:{i}>{j}:{rep.id}", uniqueness=float(rep.uniqueness),
            flagged=any(bool(f.flagged) for _, _, f in members), readout=rep.readout, side=rep.side,
            direction=rep.direction, direction_layer=rep.direction_layer, tokens=list(rep.tokens),
            token_ids=list(rep.token_ids), info=info, models=models, reads=(i, j)))
    return sorted(out, key=lambda f: -float(f.uniqueness))


@register_nway_method
class AllPairs(NWayMethod):
    name = "all_pairs"
    Config = AllPairsConfig
    cfg: AllPairsConfig

    def __init__(self, **params: Any):
        super().__init__(**params)
        if self.cfg.pair_method not in METHODS:
            from .. import load_all_methods  # the pair method's module registers it

            load_all_methods()
        pair_cls = METHODS.get(self.cfg.pair_method)
        # a floor's all-pairs form is the N-way floor, with the floor's seeds (chance is estimated, not guessed)
        self.floor, self.stochastic = pair_cls.floor, pair_cls.stochastic

    def find(self, ctx: GroupContext) -> list[GroupFinding]:
        method = METHODS.get(self.cfg.pair_method)(**self.cfg.pair_params)
        runs = [(i, j, f) for j in range(ctx.n) for i in range(ctx.n) if i != j
                for f in method.find(ctx.pair_context(i, j))]
        return merge_pair_findings(runs, self.cfg.merge_tokens, f"{self.name}:{self.cfg.pair_method}")[: self.cfg.max_findings]
