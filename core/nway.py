"""N-way diffing: N models of one base, one method over all of them, findings attributed to subsets.

The N-model analogue of `method.py`: a `GroupContext` (N models, their row-aligned activation stores on one text
set), `GroupFinding` (a `Finding` plus the subset of members it is attributed to) and `NWayMethod` with its own
registry, so a two-model method never sees a group and an N-way method is one file with `@register_nway_method`.

A `GroupFinding`'s readout is an ordinary two-input `Readout` over the activations of two members, `reads`
(x_a = member reads[0], x_b = member reads[1]), so it can be read and scored with the pair machinery on
`GroupContext.pair_context(*reads)`. `reads` = (m, m) is a read against the shared base: x_a is the base model's
activations, x_b member m's (a latent exclusive to m reads x_b only; a per-member pair method's readout is over
(base, m)); scoring reads it on (base, member m). Every member shares one activation space
(one architecture and tokenizer), so its direction needs no member.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .activations import ActivationStore, LayerActs, PairedActivations
from .findings import Finding, InvalidFindingsError, validate_findings
from .method import Method, NotApplicableError, PairContext
from .registry import Registry

if TYPE_CHECKING:
    from .model import LoadedModel


class NotAlignedError(ValueError):
    """The members' stores do not hold the same tokens row by row (another tokenizer, text set or collection)."""


@dataclass
class GroupActivations:
    """N models' activation stores on one text set, row-aligned: row r is the same token of the same text in every
    store. Checked at construction from the stores' indices (no activations read)."""

    stores: tuple[ActivationStore, ...]
    n_texts: int

    def __post_init__(self) -> None:
        self.stores = tuple(self.stores)
        if len(self.stores) < 2:
            raise ValueError(f"a group needs at least two activation stores, got {len(self.stores)}")
        first = self.stores[0]
        ref = first.index()
        for j, store in enumerate(self.stores[1:], start=1):
            idx = store.index()
            if store.n_texts != first.n_texts or ref[0].shape != idx[0].shape:
                raise NotAlignedError(
                    f"member {j}'s store {store.root.name} is not token-aligned with member 0's {first.root.name}: "
                    f"{store.n_texts} texts / {idx[0].numel()} rows vs {first.n_texts} / {ref[0].numel()}; N-way "
                    "diffing needs every member's activations on one text set with one tokenizer")
            bad = ((ref[0] != idx[0]) | (ref[1] != idx[1]) | (ref[2] != idx[2])).nonzero()
            if bad.numel():
                r = int(bad[0])
                raise NotAlignedError(
                    f"member {j}'s store {store.root.name} is not token-aligned with member 0's {first.root.name}: "
                    f"row {r} is (text {int(idx[0][r])}, position {int(idx[1][r])}, token {int(idx[2][r])}) vs "
                    f"(text {int(ref[0][r])}, position {int(ref[1][r])}, token {int(ref[2][r])}); N-way diffing "
                    "needs every member's activations on one text set with one tokenizer")

    def __len__(self) -> int:
        return len(self.stores)

    def load(self, layer: int, dtype: torch.dtype = torch.float32) -> list[LayerActs]:
        """Every member's rows at `layer` (row-aligned, so one member's text_idx/pos/token_id serve all)."""
        return [s.load(layer, dtype) for s in self.stores]

    def pair(self, i: int, j: int) -> PairedActivations:
        return PairedActivations(self.stores[i], self.stores[j], self.n_texts)


@dataclass
class GroupContext:
    """What an N-way method gets: N models of one architecture and tokenizer, their row-aligned activations on the
    audit corpus, a seed. Members are referred to by index (0..N-1); `names` are the models' names."""

    group_id: str
    models: tuple["LoadedModel", ...]
    corpus: GroupActivations
    layers: list[int]  # residual indices present in every store
    seed: int = 0
    device: str = "cpu"
    work_dir: Path | None = None  # scratch space for the method
    progress: bool = False
    # the unmodified base every member was fine-tuned from and its store on the same texts, where the harness knows
    # it: a method that diffs each member against the base (`base_pair_context`) needs both
    base: "LoadedModel | None" = None
    base_store: ActivationStore | None = None

    def __post_init__(self) -> None:
        self.models = tuple(self.models)
        if len(self.models) != len(self.corpus):
            raise ValueError(f"group {self.group_id}: {len(self.models)} models but {len(self.corpus)} activation stores")
        shapes = {(m.model.config.model_type, m.hidden_size, m.n_layers) for m in self.models}
        if len(shapes) > 1:
            raise ValueError(f"group {self.group_id}: N-way diffing needs one architecture, got (type, width, depth) "
                             f"{sorted(shapes)}")

    @property
    def n(self) -> int:
        return len(self.models)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def middle_layer(self) -> int:
        return self.layers[len(self.layers) // 2]

    def layer_or_middle(self, layer: int | None) -> int:
        return self.middle_layer if layer is None else int(layer)

    def pair_context(self, i: int, j: int) -> PairContext:
        """The ordinary two-model context of members i (model A) and j (model B), on the same stores."""
        return PairContext(f"{self.group_id}:{i}>{j}", self.models[i], self.models[j], self.corpus.pair(i, j),
                           layers=list(self.layers), seed=self.seed, device=self.device, work_dir=self.work_dir,
                           progress=self.progress)

    def base_pair_context(self, m: int) -> PairContext:
        """The two-model context of the shared base (model A) and member m (model B). Its findings belong in the group
        with `reads` = (m, m): a read whose x_a is the base's activations and x_b member m's (module docstring)."""
        if self.base is None or self.base_store is None:
            raise NotApplicableError(f"group {self.group_id}: this method diffs each member against the base model, "
                                     "and the group was given no base (GroupContext.base and base_store)")
        return PairContext(f"{self.group_id}:base>{m}", self.base, self.models[m],
                           PairedActivations(self.base_store, self.corpus.stores[m], self.corpus.n_texts),
                           layers=list(self.layers), seed=self.seed, device=self.device, work_dir=self.work_dir,
                           progress=self.progress)

    def logit_lens_many(self, vecs: torch.Tensor, member: int, k: int = 20) -> list[tuple[list[int], list[str]]]:
        """The logit lens of each row of vecs [m, d] in member `member`'s model."""
        from .lens import lens

        return lens(self.models[member], vecs, k)


@dataclass
class GroupFinding(Finding):
    """A `Finding` attributed to a subset of the group's members. `models`: the members the difference is in
    (sorted, non-empty); `reads`: the members whose activations are its readout's x_a and x_b."""

    models: tuple[int, ...] = ()
    reads: tuple[int, int] = (0, 0)


def validate_group_findings(findings: Any, ctx: GroupContext) -> None:
    """A method's output: GroupFindings with unique ids, subsets and reads within the group, and each finding valid
    (`validate_findings`) on the pair context of its `reads`. Raises InvalidFindingsError naming the finding."""
    if not isinstance(findings, list):
        raise InvalidFindingsError(f"find() must return a list of GroupFinding, got {type(findings).__name__}")
    by_reads: dict[tuple[int, int], list[Finding]] = {}
    seen: set[str] = set()
    for i, f in enumerate(findings):
        if not isinstance(f, GroupFinding):
            raise InvalidFindingsError(f"item {i} of find()'s output is a {type(f).__name__}, not a GroupFinding")
        members = tuple(f.models)
        if not members or list(members) != sorted(set(members)) or not all(
                isinstance(m, int) and 0 <= m < ctx.n for m in members):
            raise InvalidFindingsError(f"finding {f.id!r}: models {f.models!r} must be sorted distinct members of 0..{ctx.n - 1}")
        if len(f.reads) != 2 or not all(isinstance(m, int) and 0 <= m < ctx.n for m in f.reads):
            raise InvalidFindingsError(f"finding {f.id!r}: reads {f.reads!r} must be two members of 0..{ctx.n - 1}")
        if f.id in seen:
            raise InvalidFindingsError(f"finding {i}: id {f.id!r} is not unique")
        seen.add(f.id)
        by_reads.setdefault((f.reads[0], f.reads[1]), []).append(f)
    for (a, b), group in by_reads.items():
        validate_findings(group, ctx.pair_context(a, b))


# ----------------------------------------------------------------------------- methods and their registry


class NWayMethod(Method):
    """Base class of an N-way method: set `name` and `Config` (a MethodConfig dataclass, the only home of its
    defaults) and implement `find(ctx) -> list[GroupFinding]`. The config and its hash are `Method`'s; N-way methods
    have their own registry (`NWAY_METHODS`), so they never run as pair methods."""

    def find(self, ctx: GroupContext) -> list[GroupFinding]:  # type: ignore[override]  # pragma: no cover - interface
        raise NotImplementedError


NWAY_METHODS: Registry[type[NWayMethod]] = Registry("N-way method")


def register_nway_method(cls: type[NWayMethod]) -> type[NWayMethod]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name`")
    NWAY_METHODS.register(cls.name)(cls)
    return cls


def subset_name(members: Sequence[int]) -> str:
    """'0+2' for members (0, 2): how a subset appears in ids and info."""
    return "+".join(str(m) for m in members)
