"""Attribution scoring of N-way findings, independent of how the findings were made or matched.

Input: a method's ranked findings on one group (anything with `id`, `models` (the members it is attributed to) and
`flagged`, e.g. `GroupFinding`), the ground truth {behavior: members that have it}, which findings match which
behavior (a precomputed table {behavior: finding ids}, or a callable (behavior, finding) -> bool: the pair channels
of `scoring.py` once they are wired), and the null member (a fine-tune with nothing planted), if any.

Per behavior b with truth T_b, over the top k findings:
- exact-set recall@k: some top-k finding matches b and its subset equals T_b;
- per-model recall@k: the share of T_b's members m for which some top-k finding that matches b includes m;
- attribution accuracy@k: among the top-k findings that match b, the share whose subset equals T_b (undefined
  without a match).
Per group: null false alarms, the flagged findings (all, not only the top k: the flag is the method's own decision)
whose subset contains the null member.

`aggregate` pools groups (seeds, suites) into proportions with 95% intervals (Wilson, or exact Clopper-Pearson):
exact-set recall over behaviors, per-model recall over (behavior, member) units, attribution accuracy over matching
findings (not independent draws: the interval is a guide), and the null false-alarm rate over groups with a null
member (any flagged finding containing it), beside the mean count of such findings per group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Collection, Literal, Mapping, Protocol, Sequence

from .significance import binomial_interval


class Attributed(Protocol):
    id: str
    models: tuple[int, ...]
    flagged: bool


Matches = Mapping[str, Collection[str]] | Callable[[str, Attributed], bool]


@dataclass(frozen=True)
class BehaviorScore:
    behavior: str
    truth: frozenset[int]
    k: int
    exact_hit: bool  # exact-set recall@k
    members_found: frozenset[int]  # members of the truth included by some matching top-k finding
    n_matching: int  # top-k findings that match the behavior
    n_exact: int  # ... of them attributed to exactly the truth

    @property
    def per_model_recall(self) -> float:
        return len(self.members_found) / len(self.truth)

    @property
    def attribution_accuracy(self) -> float:
        return self.n_exact / self.n_matching if self.n_matching else math.nan


@dataclass(frozen=True)
class GroupScore:
    behaviors: tuple[BehaviorScore, ...]
    null_member: int | None
    null_false_alarms: int  # flagged findings whose subset contains the null member (0 without one)


def score_group(findings: Sequence[Attributed], truth: Mapping[str, Collection[int]], matches: Matches, k: int,
                null_member: int | None = None) -> GroupScore:
    """Scores of one method's ranked findings (best first) on one group; see the module docstring."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    match = matches if callable(matches) else (lambda b, f: f.id in matches.get(b, ()))
    top = findings[:k]
    out = []
    for b, members in truth.items():
        t = frozenset(members)
        if not t:
            raise ValueError(f"behavior {b!r} has no member that has it")
        hits = [frozenset(f.models) for f in top if match(b, f)]
        exact = sum(h == t for h in hits)
        out.append(BehaviorScore(b, t, k, exact > 0, t & frozenset().union(*hits), len(hits), exact))
    alarms = 0 if null_member is None else sum(bool(f.flagged) and null_member in f.models for f in findings)
    return GroupScore(tuple(out), null_member, alarms)


@dataclass(frozen=True)
class Proportion:
    value: float  # successes / trials (nan without trials)
    lo: float
    hi: float
    successes: int
    trials: int


def proportion(successes: int, trials: int, method: Literal["wilson", "exact"] = "wilson", level: float = 0.95) -> Proportion:
    """successes / trials with a binomial interval (scipy's binomtest: Wilson score, or exact Clopper-Pearson)."""
    if trials == 0:
        return Proportion(math.nan, math.nan, math.nan, 0, 0)
    return Proportion(successes / trials, *binomial_interval(successes, trials, level, method), successes, trials)


def aggregate(groups: Sequence[GroupScore], method: Literal["wilson", "exact"] = "wilson",
              level: float = 0.95) -> dict[str, Proportion | float]:
    """Pooled figures over groups (module docstring): exact_set_recall, per_model_recall, attribution_accuracy and
    null_false_alarm_rate as `Proportion`s; null_false_alarms_per_group as a mean (nan without a null member)."""
    bs = [b for g in groups for b in g.behaviors]
    with_null = [g for g in groups if g.null_member is not None]
    return {
        "exact_set_recall": proportion(sum(b.exact_hit for b in bs), len(bs), method, level),
        "per_model_recall": proportion(sum(len(b.members_found) for b in bs), sum(len(b.truth) for b in bs), method, level),
        "attribution_accuracy": proportion(sum(b.n_exact for b in bs), sum(b.n_matching for b in bs), method, level),
        "null_false_alarm_rate": proportion(sum(g.null_false_alarms > 0 for g in with_null), len(with_null), method, level),
        "null_false_alarms_per_group": (sum(g.null_false_alarms for g in with_null) / len(with_null)
                                        if with_null else math.nan),
    }
