"""The method interface: a method takes a `PairContext` (two models, their paired activations on the audit
corpus, a seed) and returns ranked findings. A new method is one file with a `MethodConfig` dataclass and
`@register_method`.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .findings import Finding
from .io import atomic_write, dumps, safe_name, stable_hash
from .registry import Registry
from .typecheck import fits

if TYPE_CHECKING:
    from .activations import PairedActivations
    from .model import LoadedModel


@dataclass
class PairContext:
    """What a method gets: the two models, their paired activations on the audit corpus, a seed."""

    pair_id: str
    model_a: "LoadedModel"
    model_b: "LoadedModel"
    corpus: "PairedActivations"
    layers: list[int]  # residual indices present in the stores (model A's; same index in both for same-arch pairs)
    seed: int = 0
    device: str = "cpu"
    work_dir: Path | None = None  # scratch space for the method (checkpoints, logs)
    layers_b: list[int] | None = None  # model B's residual indices when they differ (cross-architecture pairs)
    progress: bool = False  # a method may show a progress bar on its long steps (the run's `progress` option)

    @property
    def same_architecture(self) -> bool:
        ca, cb = self.model_a.model.config, self.model_b.model.config
        return ca.model_type == cb.model_type and ca.hidden_size == cb.hidden_size and ca.num_hidden_layers == cb.num_hidden_layers

    @property
    def shared_space(self) -> bool:
        """Both models' activations live in one space, position by position (same architecture and tokens)."""
        return self.same_architecture and not getattr(self.corpus, "aligned", False)

    def require_shared_space(self, what: str) -> None:
        """Raise NotApplicableError (with the reason) for a pair of models that do not share a space."""
        if self.shared_space:
            return
        ca, cb = self.model_a.model.config, self.model_b.model.config
        raise NotApplicableError(
            f"{what} needs a shared activation space, i.e. two models of one architecture and tokenizer; "
            f"this pair is {self.model_a.name} ({ca.model_type}, d={ca.hidden_size}, {ca.num_hidden_layers} layers) vs "
            f"{self.model_b.name} ({cb.model_type}, d={cb.hidden_size}, {cb.num_hidden_layers} layers)"
            + (", with different tokenizers" if getattr(self.corpus, "aligned", False) else ""))

    @property
    def middle_layer(self) -> int:
        return self.layers[len(self.layers) // 2]

    def layer_or_middle(self, layer: int | None) -> int:
        """A method's `layer` option: the residual index it names, or the pair's middle layer when None."""
        return self.middle_layer if layer is None else int(layer)

    @property
    def middle_layer_b(self) -> int:
        """Model B's middle layer (== middle_layer unless the models differ in depth)."""
        layers = self.layers_b or self.layers
        return layers[len(layers) // 2]

    def logit_lens(self, vec: torch.Tensor, side: str = "b", k: int = 20) -> tuple[list[int], list[str]]:
        return self.logit_lens_many(vec.reshape(1, -1), side, k)[0]

    def logit_lens_many(self, vecs: torch.Tensor, side: str = "b", k: int = 20) -> list[tuple[list[int], list[str]]]:
        """`logit_lens` of each row of vecs [m, d], in one matmul (the fp32 unembedding is converted once per model)."""
        from .lens import lens

        return lens(self.model_b if side != "a" else self.model_a, vecs, k)


class NotApplicableError(RuntimeError):
    """Raised by a method that cannot be defined for this pair (e.g. weight diffs across architectures)."""


def make_config(cls: type, name: str, params: dict[str, Any]) -> Any:
    """The method's typed config from `params` (YAML and command-line overrides): the dataclass holds every default;
    an unknown key or a value of the wrong type is one clear error naming the key."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise TypeError(f"{name}: unknown config key(s) {unknown}; known: {sorted(known)} (defaults: {cls.__qualname__})")
    hints = typing.get_type_hints(cls)
    for key, value in params.items():
        if not fits(value, hints[key]):
            raise TypeError(f"{name}: {key}={value!r} does not fit its type {hints[key]}")
    return cls(**params)


@dataclass
class MethodConfig:
    """Base of every method's config dataclass (the only home of its defaults; conf/method/*.yaml holds overrides)."""


class Method:
    """Base class. Subclasses set `name` and `Config` (a MethodConfig dataclass) and implement `find`."""

    name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False  # run with several seeds in suites that ask for it
    floor: ClassVar[bool] = False  # a chance baseline (scored like every method; suites run it with `floor_seeds` seeds)
    Config: ClassVar[type] = MethodConfig  # the method's typed config: every default lives there
    # applies to two models of different architectures or tokenizers (no shared activation space, weights or vocabulary),
    # e.g. a crosscoder on aligned activations; `diffbench diff` picks its defaults for such a pair by it, before loading
    cross_architecture: ClassVar[bool] = False

    def __init__(self, **params: Any):
        self.cfg = make_config(self.Config, self.name or type(self).__name__, params)  # what a method reads: self.cfg.<option>
        # the same, by key (resolved: what the run used), only to hash (config_hash) and record (saved run metrics)
        self.config: dict[str, Any] = asdict(self.cfg)

    @property
    def config_hash(self) -> str:
        """Key of the method and its resolved config: saved findings are reused, and reference calibrations applied,
        only under the same key (moving a value between the dataclass and YAML changes nothing)."""
        return stable_hash({"name": self.name, "config": self.config})

    def find(self, ctx: PairContext) -> list[Finding]:  # pragma: no cover - interface
        raise NotImplementedError


def work_stem(ctx: "PairContext", method_name: str) -> Path | None:
    """`<work_dir>/<method>-<pair>-seed<s>` (work_dir created), where a method keeps its side products; None without one."""
    if ctx.work_dir is None:
        return None
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    return ctx.work_dir / f"{method_name}-{safe_name(ctx.pair_id, 200)}-seed{ctx.seed}"


def save_run_metrics(ctx: "PairContext", method_name: str, metrics: dict[str, Any]) -> Path | None:
    """Write a run's training metrics to `<work_stem>.metrics.json` (atomically; the report's training table reads
    them); returns the stem (for further side products) or None without a work dir."""
    stem = work_stem(ctx, method_name)
    if stem is not None:
        atomic_write(f"{stem}.metrics.json", dumps(metrics, indent=1))
    return stem




METHODS: Registry[type[Method]] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name`")
    METHODS.register(cls.name)(cls)
    return cls
