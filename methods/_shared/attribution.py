"""What the N-way baselines share (methods/nway/): a finding attributed to members before the merge, the merge rule
that joins findings of one difference into one attributed to the union of their members, and a two-model method
looked up by name. A private helper module, so that no method imports another (tests/test_layering.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable

from ...core import METHODS, Finding, Method
from ...core.nway import GroupFinding


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


def pair_method_class(name: str) -> type[Method]:
    """A registered two-model method by name (loading the package's methods if its module is not imported yet)."""
    if name not in METHODS:
        from .. import load_all_methods  # the pair method's module registers it

        load_all_methods()
    return METHODS.get(name)
