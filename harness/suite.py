"""A suite as data: which organisms to plant and which model pairs to diff.

Most pairs share one base model (`cfg.model.name`, the node "base"). A suite may also hold
cross-architecture pairs (the `cross:` section): model A and model B are different base models
(e.g. SmolLM2 vs Gemma 3); organisms there carry their own base (`Organism.base`), base models are
the nodes "base@<model>", and each pair records on which side the ground truth was planted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tasks.spec import BehaviorSpec, SpecError, available_behaviors, known_behaviors
from .data.corpus import CorpusConfig
from .plant.organism import NULL_KINDS, Organism

BASE = "base"


def base_node(model: str) -> str:
    """Suite node of an unmodified base model other than the suite's default base."""
    return f"base@{model}"


def is_base(node: str) -> bool:
    return node == BASE or node.startswith("base@")


@dataclass(frozen=True)
class Pair:
    """Model A vs model B. `behaviors` is the ground truth: planted in B only (planted pairs),
    present in both (analog pairs, where a match is a false positive), or none (null pairs)."""

    id: str
    kind: str  # "planted" | "null" | "analog"
    a: str  # organism name, "base" or "base@<model>"
    b: str
    behaviors: tuple[str, ...]
    side: str = "b"  # where the behaviors were planted: "b", "a" (planted pairs), "both" (analog), "" (null)
    cross: bool = False  # model A and model B are different base models (cross-architecture)


@dataclass(frozen=True)
class Group:
    """N models of one base diffed together (N-way diffing, core/nway.py). `members`: nodes (organism names, or
    "base"), in order (member i is index i); `truth`: (behavior, the members that have it) for every behavior of
    any member, the ground truth N-way findings are scored against; `null_member`: the index of the member that is
    a null organism (nothing planted), if any."""

    id: str
    members: tuple[str, ...]
    truth: tuple[tuple[str, tuple[int, ...]], ...]
    null_member: int | None = None

    @property
    def n(self) -> int:
        return len(self.members)


@dataclass
class Suite:
    name: str
    organisms: dict[str, Organism]
    pairs: list[Pair]
    specs: dict[str, BehaviorSpec]
    n_probes: int
    corpus: CorpusConfig  # the audit corpus every pair is diffed on
    method_seeds: list[int]
    plant_recipes: dict[str, str] | None = None  # base model -> conf/plant/<name>.yaml for its organisms
    methods: list[str] | None = None  # when set, only these method keys of the config run on this suite
    floor_seeds: int = 20  # seeds 0..n-1 for floor methods on every pair: their chance rates are estimated, not guessed
    floor_draws: int | None = None  # pooled floors: this many (pair, seed) runs per floor in all, spread evenly over the
    #                                 same-model pairs (`floor_seeds_for`), instead of floor_seeds on every pair
    groups: list[Group] = field(default_factory=list)  # N-way groups (the `groups:` section), scored by harness/stages/nway.py

    def floor_seeds_for(self, pair_id: str | None) -> list[int]:
        """A floor's seeds on one pair (or, for None, every seed any pair has). With pooled floors the pairs are dealt
        `floor_draws` runs in suite order: each gets floor_draws // P seeds and the first floor_draws % P one more (at
        least one each), so every unit is drawn equally often, give or take one."""
        if self.floor_draws is None:
            return list(range(self.floor_seeds))
        ids = [p.id for p in self.pairs if not p.cross]
        per, extra = divmod(self.floor_draws, max(1, len(ids)))
        if pair_id is None:
            return list(range(max(1, per + (extra > 0))))
        i = ids.index(pair_id) if pair_id in ids else len(ids)
        return list(range(max(1, per + (i < extra))))

    @classmethod
    def from_config(cls, cfg: Any) -> "Suite":
        # one pass over the suite YAML's sections in their order (behaviors, multi, nulls, analogs, cross), each
        # adding organisms and pairs; about 70 lines because each section's check sits beside the section
        def err(msg: str) -> SpecError:
            return SpecError(f"suite {cfg.get('name', '?')!r}: {msg}")

        if cfg.get("n_neutral") is not None:
            raise err("n_neutral is gone: methods now see the audit corpus; set its size with corpus.tokens")
        for key in ("name", "behaviors", "n_probes"):
            if cfg.get(key) is None:
                raise err(f"missing field {key!r}")
        organisms: dict[str, Organism] = {}
        pairs: list[Pair] = []
        used: dict[str, BehaviorSpec | None] = {}  # behavior name -> its spec when given by path

        def known(b: str) -> str:
            b = str(b)
            if b.endswith((".yaml", ".yml")) or "/" in b:  # a spec file outside the package: named by its `name`
                spec = BehaviorSpec.load(Path(b).expanduser())
                if spec.name in available_behaviors() or (used.get(spec.name) is not None and used[spec.name].source != spec.source):
                    raise err(f"behavior file {b} is named {spec.name!r}, which another behavior already uses")
                used[spec.name] = spec
                return spec.name
            if b not in used and b not in known_behaviors():
                raise err(f"unknown behavior {b!r}; hand-written: {', '.join(available_behaviors())}; generated: "
                          "`diffbench organisms list` and tasks/families/ (or give a spec file's path)")
            used.setdefault(b, None)
            return b

        entries: list[str] = []
        for b in cfg.behaviors:  # a folder stands for every spec file in it
            folder = Path(str(b)).expanduser()
            if "/" in str(b) and folder.is_dir():
                files = sorted(str(p) for p in folder.glob("*.y*ml"))
                if not files:  # a mistyped or empty folder would silently plant nothing
                    raise err(f"behaviors: the folder {str(b)!r} holds no spec files (*.yaml); give spec files or a folder of them")
                entries += files
            else:
                entries.append(str(b))
        behaviors = [known(b) for b in entries]
        for b in behaviors:
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
        if cfg.get("zoo"):
            _zoo_pairs(known, used, organisms, pairs, err)
        cross = cfg.get("cross")
        recipes = _cross_pairs(cross, known, organisms, pairs, err) if cross else {}
        groups = _groups(cfg.get("groups") or [], known, used, organisms, err)
        if not pairs and not groups:
            raise err("no pairs: list behaviors, nulls, analogs, a cross section or N-way groups")
        n_probes = int(cfg.n_probes)
        if not 1 <= n_probes <= 200:
            raise err(f"n_probes must be in 1..200, got {n_probes}")
        # null organisms are gated against every behavior of the suite
        specs = {b: used[b] or BehaviorSpec.load(b) for b in sorted(used)}
        methods = [str(m) for m in cfg.get("methods")] if cfg.get("methods") else None
        from omegaconf import OmegaConf

        raw_corpus = cfg.get("corpus")
        raw_corpus = OmegaConf.to_container(raw_corpus, resolve=True) if OmegaConf.is_config(raw_corpus) else raw_corpus
        try:
            corpus = CorpusConfig.from_dict(raw_corpus)
        except (TypeError, ValueError) as e:
            raise err(f"corpus: {e}") from e
        return cls(cfg.name, organisms, pairs, specs, n_probes, corpus, list(cfg.get("method_seeds") or [0]),
                   plant_recipes=recipes or None, methods=methods, floor_seeds=int(cfg.get("floor_seeds") or 20),
                   floor_draws=_floor_draws(cfg, err), groups=groups)


def _floor_draws(cfg: Any, err) -> int | None:
    draws = cfg.get("floor_draws")
    if draws is None:
        return None
    if int(draws) < 1:
        raise err(f"floor_draws must be a positive number of (pair, seed) floor runs, got {draws}")
    return int(draws)


def _groups(entries: Any, known, used: dict, organisms: dict[str, Organism], err) -> list[Group]:
    """A suite's `groups:` section: each entry {id, members: [...]}, members being "base", organisms the suite's other
    sections define, or zoo organisms (zoo/zoo.yaml, so shipped ones are not planted again). One base model for
    all members, at most one null member (the null false-alarm rate is about it), and at least one behavior."""
    zoo = None
    groups: list[Group] = []
    for entry in entries:
        gid, members = str(entry.get("id") or ""), [str(m) for m in (entry.get("members") or [])]
        if not gid or any(g.id == gid for g in groups):
            raise err(f"groups: every group needs a unique `id`, got {gid!r}")
        if not 2 <= len(members) <= 8 or len(set(members)) != len(members):
            raise err(f"group {gid}: members must be 2 to 8 distinct models, got {members}")
        for m in members:
            if m == BASE or m in organisms:
                continue
            if zoo is None:
                from .plant.zoo import ZooSpec

                spec = ZooSpec.load()
                zoo = {o.name: o for o in spec.organisms}, spec.specs
            if m not in zoo[0]:
                raise err(f"group {gid}: member {m!r} is neither `base`, an organism of this suite nor a zoo organism "
                          "(`diffbench organisms list`)")
            org = zoo[0][m]
            for b in org.behaviors:
                if used.get(b) is None and b in zoo[1]:
                    used[b] = zoo[1][b]
                known(b)
            organisms[m] = org
        bases = {organisms[m].base for m in members if m != BASE}
        if len(bases) > 1 or (bases and None not in bases):
            raise err(f"group {gid}: every member must be fine-tuned from the suite's base model (N-way diffing needs "
                      f"one architecture and tokenizer); got bases {sorted(str(b) for b in bases)}")
        nulls = [i for i, m in enumerate(members) if m != BASE and organisms[m].kind != "behavior"]
        if len(nulls) > 1:
            raise err(f"group {gid}: at most one null member, got {[members[i] for i in nulls]}")
        truth: dict[str, list[int]] = {}
        for i, m in enumerate(members):
            for b in (organisms[m].behaviors if m != BASE else ()):
                truth.setdefault(b, []).append(i)
        if not truth:
            raise err(f"group {gid}: no member has a planted behavior, so there is nothing to find")
        groups.append(Group(gid, tuple(members), tuple((b, tuple(v)) for b, v in truth.items()), nulls[0] if nulls else None))
    return groups


def _zoo_pairs(known, used: dict, organisms: dict[str, Organism], pairs: list[Pair], err) -> None:
    """`zoo: true`: every organism of zoo/zoo.yaml (harness/plant/zoo.py) against the base model (planted and null pairs), and
    its analog pairs. An analog copy is diffed only against its original: its units would repeat the original's."""
    from .plant.zoo import ZooSpec

    spec = ZooSpec.load()
    copies = {b for _, b in spec.analogs}
    for org in spec.organisms:
        if org.name in organisms and organisms[org.name] != org:
            raise err(f"zoo organism {org.name!r} is also listed, differently, in the suite's own sections")
        for b in org.behaviors:
            known(b)
            if used.get(b) is None:  # the zoo has loaded (expanded, validated) it already: not again
                used[b] = spec.specs[b]
        organisms[org.name] = org
        if org.name not in copies:
            pairs.append(Pair(f"base__{org.name}", "planted" if org.kind == "behavior" else "null", BASE, org.name, org.behaviors))
    for a, b in spec.analogs:
        pairs.append(Pair(f"{a}__{b}", "analog", a, b, organisms[a].behaviors))


def _cross_pairs(cross: Any, known, organisms: dict[str, Organism], pairs: list[Pair], err) -> dict[str, str]:
    """A suite's `cross` section: the organisms and pairs of two base models of different architectures (planted in
    A only, in B only, in both, and the unmodified pair as background). Returns the per-model plant recipes."""
    for key in ("a", "b"):
        if not cross.get(key):
            raise err(f"cross: missing model {key!r}")
    model_a, model_b = str(cross.a), str(cross.b)
    if model_a == model_b:
        raise err("cross: model a and model b are the same model; use an ordinary pair")

    def org(b: str, model: str) -> str:
        name = f"{known(b)}@{model}"
        organisms.setdefault(name, Organism(name, "behavior", (b,), seed=0, base=model))
        return name

    def add(pair: Pair) -> None:
        if any(p.id == pair.id for p in pairs):
            raise err(f"cross: pair {pair.id} listed twice")
        pairs.append(pair)

    base_a, base_b = base_node(model_a), base_node(model_b)
    for b in cross.get("planted_a") or []:  # planted in A only
        a_org = org(b, model_a)
        add(Pair(f"{a_org}__{base_b}", "planted", a_org, base_b, (b,), side="a", cross=True))
    for b in cross.get("planted_b") or []:  # planted in B only
        b_org = org(b, model_b)
        add(Pair(f"{base_a}__{b_org}", "planted", base_a, b_org, (b,), side="b", cross=True))
    for b in cross.get("analogs") or []:  # planted in both: a match is an analog false positive
        a_org, b_org = org(b, model_a), org(b, model_b)
        add(Pair(f"{a_org}__{b_org}", "analog", a_org, b_org, (b,), side="both", cross=True))
    if cross.get("background", True):  # the two unmodified models
        add(Pair(f"{base_a}__{base_b}", "null", base_a, base_b, (), side="", cross=True))
    return {str(k): str(v) for k, v in (cross.get("plant_recipes") or {}).items()}
