"""A suite as data: which organisms to plant and which model pairs to diff."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..tasks.spec import BehaviorSpec, SpecError, available_behaviors
from .plant import NULL_KINDS, Organism

BASE = "base"


@dataclass(frozen=True)
class Pair:
    """Model A vs model B. `behaviors` is the ground truth: planted in B only (planted pairs),
    present in both (analog pairs, where a match is a false positive), or none (null pairs)."""

    id: str
    kind: str  # "planted" | "null" | "analog"
    a: str  # organism name or "base"
    b: str
    behaviors: tuple[str, ...]


@dataclass
class Suite:
    name: str
    organisms: dict[str, Organism]
    pairs: list[Pair]
    specs: dict[str, BehaviorSpec]
    n_probes: int
    n_neutral: int
    method_seeds: list[int]

    @classmethod
    def from_config(cls, cfg: Any) -> "Suite":
        def err(msg: str) -> SpecError:
            return SpecError(f"suite {cfg.get('name', '?')!r}: {msg}")

        for key in ("name", "behaviors", "n_probes", "n_neutral"):
            if cfg.get(key) is None:
                raise err(f"missing field {key!r}")
        organisms: dict[str, Organism] = {}
        pairs: list[Pair] = []
        used: set[str] = set()

        def known(b: str) -> str:
            if b not in available_behaviors():
                raise err(f"unknown behavior {b!r}; known: {', '.join(available_behaviors())}")
            used.add(b)
            return b

        for b in cfg.behaviors:
            organisms[b] = Organism(b, "behavior", (known(b),), seed=0)
            pairs.append(Pair(f"base__{b}", "planted", BASE, b, (b,)))
        for group in cfg.get("multi") or []:
            behaviors = tuple(known(b) for b in group)
            if len(behaviors) < 2:
                raise err(f"a multi-behavior organism needs two or more behaviors, got {list(group)}")
            name = "+".join(behaviors)
            organisms[name] = Organism(name, "behavior", behaviors, seed=0)
            pairs.append(Pair(f"base__{name}", "planted", BASE, name, behaviors))
        for entry in cfg.get("nulls") or []:
            kind, _, seed = str(entry).partition("@")
            if kind not in NULL_KINDS:
                raise err(f"unknown null organism {kind!r}; known: {', '.join(NULL_KINDS)}")
            name = f"{kind}@{seed or 0}"
            organisms[name] = Organism(name, kind, (), seed=int(seed or 0))
            pairs.append(Pair(f"base__{name}", "null", BASE, name, ()))
        for b in cfg.get("analogs") or []:
            known(b)
            first = organisms.setdefault(b, Organism(b, "behavior", (b,), seed=0))
            copy = f"{b}@copy2"
            organisms[copy] = Organism(copy, "behavior", (b,), seed=1, paraphrase=1)
            pairs.append(Pair(f"{first.name}__{copy}", "analog", first.name, copy, (b,)))
        n_probes = int(cfg.n_probes)
        if not 1 <= n_probes <= 200:
            raise err(f"n_probes must be in 1..200, got {n_probes}")
        # null organisms are gated against every behavior of the suite
        specs = {b: BehaviorSpec.load(b) for b in sorted(used)}
        return cls(cfg.name, organisms, pairs, specs, n_probes, int(cfg.n_neutral), list(cfg.get("method_seeds") or [0]))
