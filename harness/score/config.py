"""The scoring protocol's options (DESIGN.md, "Scoring protocol"): the `scoring` config group's one home of its
defaults (registered by harness/config_defaults.py; `scoring.x=...` overrides one). Free of torch, so composing a
config does not load it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class StrongConfig:
    """The causal channel (see strong.py). `null_draws` >= k / alpha - 1 so that a chance finding passes with
    probability <= alpha / k (Monte-Carlo p-value); steering costs (findings + null) x n_prompts generations."""

    enabled: bool = True
    k: int = 5  # each method's top-k findings (with a direction) are tested
    n_prompts: int = 8  # held-out T prompts steered (the first n of the probe set)
    max_new_tokens: int = 8  # greedy tokens per continuation: the detectors fire on the first words
    null_draws: int = 124  # norm-matched random directions per (pair, behavior, layer): >= k / alpha - 1
    alpha: float = 0.04  # this channel's share of the family-wise 0.08 (see ScoringConfig)
    min_change: float = 0.25  # absolute change in behavior rate a strong hit needs
    max_seeds: int = 3  # seeds per method that get the (costly) causal test; metrics of this channel use these
    floor_max_seeds: int | None = None  # the same for floors; None = every seed, so a floor's any-channel rate is
    #                                     estimated over all its seeds (20 in the suites), not guessed from 3
    batch_size: int = 128  # generation rows per batch
    null_from: str | None = "auto"  # a committed reference (harness/references.py name or run folder) whose null draws
    #   this run reuses where they are its own: same protocol version, dtype, generation settings, models and prompts
    #   (checked per unit); auto = the reference named like the suite, where one exists; None = draw every null here
    max_collateral: float | None = 0.25  # ablation specificity: an ablation counts only if it changes model B's greedy
    #   continuation on at most this share of the unit's first n_prompts C prompts (None: not checked; 0.25 = 2 of 8, where 70
    #   random directions changed 0-3 of 8, mean 0.4). Why: ablation
    #   has no norm to match, and removing a direction that holds much of the residual damages every answer, T and C
    #   alike (docs/known-gaps.md; scripts/strong_specificity.py)

    def seeds_tested(self, seeds: list[int], floor: bool) -> list[int]:
        """The seeds (of a method's sorted seeds) that get the causal test."""
        limit = self.floor_max_seeds if floor else self.max_seeds
        return list(seeds) if limit is None else list(seeds)[:limit]


@dataclass
class ScoringConfig:
    auroc_min: float = 0.85
    control_auroc_max: float = 0.65
    top_tokens: int = 20
    ks: tuple[int, ...] = (1, 5, 20)
    null_quantile: float = 0.95
    bootstrap: int = 1000
    bootstrap_seed: int = 0
    # Family-wise false-hit rate of a chance list, per channel; the union of the three is at most their sum,
    # 0.02 + 0.02 + 0.04 = 0.08 (the causal channel tests only the top k, so it gets the larger share).
    alpha: float = 0.02  # activation channel: over a top-K list (K = max(ks)), each finding at alpha / K
    null_draws: int = 20000  # random readouts per family for the activation null (drawn in chunks, early stop)
    token_alpha: float = 0.02  # token channel: a keyword among the top tokens counts at p <= token_alpha / K
    token_null_draws: int = 4999  # random directions whose logit lens sets the token channel's null
    strong: StrongConfig = field(default_factory=StrongConfig)

    @property
    def K(self) -> int:
        return max(self.ks)

    @classmethod
    def from_dict(cls, d: dict) -> "ScoringConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown scoring option(s): {', '.join(sorted(unknown))}")
        if "ks" in known:
            known["ks"] = tuple(int(k) for k in known["ks"])
        strong = known.pop("strong", None)
        if isinstance(strong, bool):  # scoring.strong=false switches the channel off
            strong = {"enabled": strong}
        strong = strong or {}
        if not isinstance(strong, dict):
            raise ValueError(f"scoring.strong must be a mapping or true/false, got {strong!r}")
        bad = set(strong) - set(StrongConfig.__dataclass_fields__)
        if bad:
            raise ValueError(f"unknown scoring.strong option(s): {', '.join(sorted(bad))}; known: {', '.join(StrongConfig.__dataclass_fields__)}")
        cfg = cls(**known, strong=StrongConfig(**strong))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        need = math.ceil(self.K / self.alpha - 1e-9) - 1
        if self.null_draws < need:
            raise ValueError(f"scoring.null_draws={self.null_draws} cannot resolve p <= alpha/K = {self.alpha}/{self.K}; "
                             f"use at least {need}")
        need = math.ceil(self.K / self.token_alpha - 1e-9) - 1
        if self.token_null_draws < need:
            raise ValueError(f"scoring.token_null_draws={self.token_null_draws} cannot resolve p <= token_alpha/K = "
                             f"{self.token_alpha}/{self.K}; use at least {need}")
        st = self.strong
        need = math.ceil(st.k / st.alpha - 1e-9) - 1
        if st.enabled and st.null_draws < need:
            raise ValueError(f"scoring.strong.null_draws={st.null_draws} cannot resolve p <= alpha/k = {st.alpha}/{st.k}; "
                             f"use at least {need}")
