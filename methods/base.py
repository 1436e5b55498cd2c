"""The method interface: a method takes a pair of models and returns ranked findings.

A `Finding` is data, not code: its `Readout` is a small declarative recipe
(linear read of either model's residual stream, optional ReLU/threshold, or the
difference norm), so findings are saved to disk and scoring can be rerun
without rerunning the method. A new readout kind is one subclass-free entry in
`Readout.__call__`; a new method is one file with `@register_method`.
"""

from __future__ import annotations

import json
import math
import numbers
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..harness.io import atomic_path, atomic_write, dumps, safe_name
from ..harness.registry import Registry

if TYPE_CHECKING:
    from ..harness.models import LoadedModel
    from ..harness.store import PairedActivations

Activation = Literal["identity", "relu", "abs"]


# the threshold of a readout that never counts a token (a latent with a zero decoder row): the largest float32,
# finite so that findings stay strict JSON
NEVER_FIRES = float(torch.finfo(torch.float32).max)


@dataclass
class Readout:
    """Per-token score over paired activations x_a [n, d_a], x_b [n, d_b].

    kind="linear":    act(x_a @ w_a + x_b @ w_b + bias), then zeroed where below `threshold`
                      (threshold only applies with act="relu"; it is a JumpReLU / BatchTopK
                      inference threshold)
    kind="diff_norm": ||x_b - x_a|| (same widths only)
    Either weight may be None (the finding reads one model only).
    input_norm="rms": each x is first divided by its root mean square (x / sqrt(mean(x^2) + 1e-6),
                      per token), so a linear read of an RMSNorm'ed stream (a module's input, the
                      logit lens) is exact when the norm's gain is folded into w.
    """

    layer_a: int
    layer_b: int
    kind: Literal["linear", "diff_norm"] = "linear"
    w_a: torch.Tensor | None = None
    w_b: torch.Tensor | None = None
    bias: float = 0.0
    act: Activation = "identity"
    threshold: float = 0.0
    input_norm: Literal["none", "rms"] = "none"

    def __call__(self, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
        if self.input_norm == "rms":
            x_a, x_b = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6) for x in (x_a, x_b))
        if self.kind == "diff_norm":
            return (x_b.float() - x_a.float()).norm(dim=-1)
        z = torch.full((x_a.shape[0],), float(self.bias), dtype=torch.float32)
        if self.w_a is not None:
            z = z + x_a.float() @ self.w_a.float()
        if self.w_b is not None:
            z = z + x_b.float() @ self.w_b.float()
        if self.act == "relu":
            z = torch.where(z > max(self.threshold, 0.0), z, torch.zeros_like(z))
        elif self.act == "abs":
            z = z.abs()
        return z


@dataclass
class Finding:
    """One reported difference between model A and model B."""

    id: str
    uniqueness: float  # the method's own "this is a difference" score; findings are ranked by it
    flagged: bool  # the method's own published decision rule
    readout: Readout
    side: Literal["a", "b", "both"] = "b"  # which model the difference belongs to
    direction: torch.Tensor | None = None  # residual direction for steering (in `side`'s model)
    direction_layer: int | None = None
    tokens: list[str] = field(default_factory=list)  # top tokens (logit lens), best first
    token_ids: list[int] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # method-specific numbers (floats/str only)


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


def _fits(value: Any, hint: Any) -> bool:
    """Does `value` (from YAML or the command line) fit the type annotation `hint`? Ints pass for floats, lists for
    tuples; Literal values must match."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        if origin is tuple and args and Ellipsis not in args and len(args) != len(value):
            return False
        return all(any(_fits(v, a) for a in inner) for v in value) if inner else True
    return isinstance(value, hint) if isinstance(hint, type) else True


def make_config(cls: type, name: str, params: dict[str, Any]) -> Any:
    """The method's typed config from `params` (YAML and command-line overrides): the dataclass holds every default;
    an unknown key or a value of the wrong type is one clear error naming the key."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise TypeError(f"{name}: unknown config key(s) {unknown}; known: {sorted(known)} (defaults: {cls.__qualname__})")
    hints = typing.get_type_hints(cls)
    for key, value in params.items():
        if not _fits(value, hints[key]):
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

    def __init__(self, **params: Any):
        self.cfg = make_config(self.Config, self.name or type(self).__name__, params)
        self.config: dict[str, Any] = asdict(self.cfg)  # the same, by key (resolved: what the run used)

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


def rank(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: -float(f.uniqueness))


class InvalidFindingsError(ValueError):
    """A method returned output the scorer cannot use; the run records the method as failed with this reason."""


def validate_findings(findings: Any, ctx: PairContext) -> None:
    """Check a method's output before it is saved: types, unique ids, finite numbers, readout and direction widths
    that fit the pair's models, layers the pair's stores hold. Raises InvalidFindingsError naming the finding."""
    if not isinstance(findings, list):
        raise InvalidFindingsError(f"find() must return a list of Finding, got {type(findings).__name__}")
    d_a, d_b = ctx.model_a.hidden_size, ctx.model_b.hidden_size
    # any residual index of the model: scoring collects probe activations at layers the corpus store lacks
    n_a, n_b = ctx.model_a.n_layers, ctx.model_b.n_layers
    seen: set[str] = set()

    def finite_vec(t: Any, width: int, what: str, fid: str) -> None:
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.shape[0] != width:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise InvalidFindingsError(f"finding {fid!r}: {what} must be a vector of width {width}, got {shape}")
        if not torch.isfinite(t.float()).all():
            raise InvalidFindingsError(f"finding {fid!r}: {what} has non-finite values")

    for i, f in enumerate(findings):
        if not isinstance(f, Finding):
            raise InvalidFindingsError(f"item {i} of find()'s output is a {type(f).__name__}, not a Finding")
        fid = f.id
        if not isinstance(fid, str) or not fid or fid in seen:
            raise InvalidFindingsError(f"finding {i}: id {fid!r} is empty, not a string or not unique")
        seen.add(fid)
        try:
            ok = not isinstance(f.uniqueness, (bool, str, bytes)) and math.isfinite(float(f.uniqueness))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidFindingsError(f"finding {fid!r}: uniqueness must be a finite number, got {f.uniqueness!r}")
        if not isinstance(f.flagged, (bool, np.bool_)):
            raise InvalidFindingsError(f"finding {fid!r}: flagged must be a bool, got {f.flagged!r}")
        if f.side not in ("a", "b", "both"):
            raise InvalidFindingsError(f"finding {fid!r}: side must be 'a', 'b' or 'both', got {f.side!r}")
        r = f.readout
        if not isinstance(r, Readout):
            raise InvalidFindingsError(f"finding {fid!r}: readout must be a Readout, got {type(r).__name__}")
        if not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in (r.layer_a, r.layer_b)) or not (
                0 <= r.layer_a <= n_a and 0 <= r.layer_b <= n_b):
            raise InvalidFindingsError(f"finding {fid!r}: readout layers ({r.layer_a}, {r.layer_b}) are not residual indices "
                                       f"of the models (A: 0..{n_a}, B: 0..{n_b})")
        if r.kind not in ("linear", "diff_norm") or r.act not in ("identity", "relu", "abs") or r.input_norm not in ("none", "rms"):
            raise InvalidFindingsError(f"finding {fid!r}: unknown readout kind/act/input_norm ({r.kind}, {r.act}, {r.input_norm})")
        for name in ("bias", "threshold"):
            v = getattr(r, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
                raise InvalidFindingsError(f"finding {fid!r}: readout {name} must be a finite number, got {v!r} "
                                           f"(a readout that never fires uses NEVER_FIRES)")
        if r.kind == "linear":
            if r.w_a is None and r.w_b is None:
                raise InvalidFindingsError(f"finding {fid!r}: a linear readout needs w_a or w_b")
            if r.w_a is not None:
                finite_vec(r.w_a, d_a, "readout w_a", fid)
            if r.w_b is not None:
                finite_vec(r.w_b, d_b, "readout w_b", fid)
        elif d_a != d_b:
            raise InvalidFindingsError(f"finding {fid!r}: diff_norm needs equal widths, the pair has {d_a} and {d_b}")
        if not (math.isfinite(float(r.bias)) and math.isfinite(float(r.threshold))):
            raise InvalidFindingsError(f"finding {fid!r}: readout bias and threshold must be finite")
        if f.direction is not None:
            finite_vec(f.direction, d_a if f.side == "a" else d_b, "direction", fid)
            if isinstance(f.direction_layer, bool) or not isinstance(f.direction_layer, numbers.Integral):
                raise InvalidFindingsError(f"finding {fid!r}: a direction needs an integer direction_layer")
        if not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in f.token_ids) or not all(isinstance(t, str) for t in f.tokens):
            raise InvalidFindingsError(f"finding {fid!r}: token_ids must be ints and tokens strings")


# ----------------------------------------------------------------------------- persistence


def save_findings(path: Path, findings: list[Finding], meta: dict[str, Any]) -> None:
    """findings.json (metadata) + findings.safetensors (vectors), both written atomically."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    records = []
    for i, f in enumerate(findings):
        r = asdict(f.readout)
        for key in ("w_a", "w_b"):
            vec = r.pop(key)
            if vec is not None:
                tensors[f"{i}.{key}"] = vec.detach().float().cpu().contiguous()
        if f.direction is not None:
            tensors[f"{i}.direction"] = f.direction.detach().float().cpu().contiguous()
        records.append({
            "id": f.id, "uniqueness": float(f.uniqueness), "flagged": bool(f.flagged), "side": f.side,
            "direction_layer": None if f.direction_layer is None else int(f.direction_layer), "tokens": f.tokens,
            "token_ids": [int(t) for t in f.token_ids],
            "info": f.info, "readout": r,
        })
    tensors.setdefault("_empty", torch.zeros(1))
    with atomic_path(path.with_suffix(".safetensors")) as tmp:
        save_file(tensors, str(tmp))
    atomic_write(path.with_suffix(".json"), dumps({"meta": meta, "findings": records}, indent=1))


def load_findings(path: Path) -> tuple[list[Finding], dict[str, Any]]:
    path = Path(path)
    data = json.loads(path.with_suffix(".json").read_text())
    tensors = load_file(str(path.with_suffix(".safetensors")))
    out = []
    for i, rec in enumerate(data["findings"]):
        readout = Readout(**rec["readout"], w_a=tensors.get(f"{i}.w_a"), w_b=tensors.get(f"{i}.w_b"))
        out.append(Finding(
            id=rec["id"], uniqueness=rec["uniqueness"], flagged=rec["flagged"], readout=readout, side=rec["side"],
            direction=tensors.get(f"{i}.direction"), direction_layer=rec["direction_layer"],
            tokens=rec["tokens"], token_ids=rec["token_ids"], info=rec["info"],
        ))
    return out, data["meta"]
