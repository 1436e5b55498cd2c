"""All-pairs baseline: a two-model method run on every ordered pair of members, its findings merged into subsets.

The baseline an N-way method must beat. For every ordered pair (i, j), i != j, the pair method (`pair_method`,
default `mean_diff`) runs on the ordinary `PairContext` of member i as model A and member j as model B (the group's
own stores). Attribution rule: a finding on side "b" of (i, j) is attributed to {j}, on side "a" to {i}, on "both"
to {i, j}. Merge rule: findings whose first `merge_tokens` logit-lens tokens are the same set (any pairs, any sides)
are one difference, attributed to the union of their attributions; the merged finding keeps the readout, direction
and tokens of its highest-uniqueness member (`reads` = that pair), that uniqueness, and is flagged if any member
was. A finding without tokens (or `merge_tokens: 0`) stays on its own. Ordered pairs, because most pair methods
report on side "b" only: with i < j alone, member 0 could never be attributed anything. The merge (`merge_attributed`,
on findings already attributed) is the other N-way baselines' too: per_member and mean_vs_rest with this token key,
logprob_vs_rest with (text, side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from ...core import METHODS, Finding, Method, MethodConfig
from ...core.nway import GroupContext, GroupFinding, NWayMethod, register_nway_method

ATTRIBUTION = {"a": lambda i, j: (i,), "b": lambda i, j: (j,), "both": lambda i, j: tuple(sorted({i, j}))}


@dataclass
class AllPairsConfig(MethodConfig):
    pair_method: str = "mean_diff"  # a registered two-model method, run on every ordered pair of members
    pair_params: dict[str, Any] = field(default_factory=dict)  # its config overrides
    merge_tokens: int = 3  # findings whose first this-many tokens are the same set are merged (0: never merge)
    max_findings: int = 50


@dataclass(frozen=True)
class Attributed:
    """One run's finding before the merge: the members it is attributed to, the members its readout reads (`reads`)
    and the run's label (`1>0` for pair 1 -> 0, `2` for member 2's own run), which names it in ids and info."""

    models: tuple[int, ...]
    reads: tuple[int, int]
    label: str
    finding: Finding


def same_tokens(merge_tokens: int) -> Callable[[Finding], Hashable | None]:
    """The merge key of the token rule: the set of a finding's first `merge_tokens` tokens (None: never merged)."""
    return lambda f: frozenset(f.token_ids[:merge_tokens]) if merge_tokens > 0 and f.token_ids else None


def merge_attributed(runs: list[Attributed], key: Callable[[Finding], Hashable | None], prefix: str,
                     what: str) -> list[GroupFinding]:
    """Findings with one (non-None) `key` are one difference: attributed to the union of their members, with the
    readout, direction, tokens, `reads` and uniqueness of the highest-uniqueness one, flagged if any was; `info[what]`
    lists the runs' labels. Ranked by uniqueness."""
    groups: dict[Any, list[Attributed]] = {}
    for n, r in enumerate(runs):
        k = key(r.finding)
        groups.setdefault(("alone", n) if k is None else ("key", k), []).append(r)
    out = []
    for same in groups.values():
        best = max(same, key=lambda r: float(r.finding.uniqueness))
        rep = best.finding
        models = tuple(sorted({m for r in same for m in r.models}))
        info = {**rep.info, what: ",".join(r.label for r in same), f"n_{what}": float(len(same))}
        out.append(GroupFinding(
            id=f"{prefix}:{best.label}:{rep.id}", uniqueness=float(rep.uniqueness),
            flagged=any(bool(r.finding.flagged) for r in same), readout=rep.readout, side=rep.side,
            direction=rep.direction, direction_layer=rep.direction_layer, tokens=list(rep.tokens),
            token_ids=list(rep.token_ids), info=info, models=models, reads=best.reads))
    return sorted(out, key=lambda f: -float(f.uniqueness))


def merge_pair_findings(runs: list[tuple[int, int, Finding]], merge_tokens: int, prefix: str) -> list[GroupFinding]:
    """The merge rule (module docstring) on (i, j, finding of pair i -> j) triples, ranked by uniqueness."""
    attributed = [Attributed(ATTRIBUTION[f.side](i, j), (i, j), f"{i}>{j}", f) for i, j, f in runs]
    return merge_attributed(attributed, same_tokens(merge_tokens), prefix, "pairs")


def pair_method_class(name: str) -> type[Method]:
    """A registered two-model method by name (loading the package's methods if its module is not imported yet)."""
    if name not in METHODS:
        from .. import load_all_methods  # the pair method's module registers it

        load_all_methods()
    return METHODS.get(name)


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
        method = METHODS.get(self.cfg.pair_method)(**self.cfg.pair_params)
        runs = [(i, j, f) for j in range(ctx.n) for i in range(ctx.n) if i != j
                for f in method.find(ctx.pair_context(i, j))]
        return merge_pair_findings(runs, self.cfg.merge_tokens, f"{self.name}:{self.cfg.pair_method}")[: self.cfg.max_findings]
