"""The method interface: a method takes a pair of models and returns ranked findings.

A `Finding` is data, not code: its `Readout` is a small declarative recipe
(linear read of either model's residual stream, optional ReLU/threshold, or the
difference norm), so findings are saved to disk and scoring can be rerun
without rerunning the method. A new readout kind is one subclass-free entry in
`Readout.__call__`; a new method is one file with `@register_method`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from safetensors.torch import load_file, save_file

from ..harness.io import atomic_path, atomic_write
from ..harness.registry import Registry

if TYPE_CHECKING:
    from ..harness.models import LoadedModel
    from ..harness.store import PairedActivations

Activation = Literal["identity", "relu", "abs"]


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


class Method:
    """Base class. Subclasses set `name`, take their config as keyword arguments, implement `find`."""

    name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False  # run with several seeds in suites that ask for it
    floor: ClassVar[bool] = False  # a chance baseline (scored like every method; suites run it with `floor_seeds` seeds)

    def __init__(self, **config: Any):
        self.config = config

    def find(self, ctx: PairContext) -> list[Finding]:  # pragma: no cover - interface
        raise NotImplementedError


def work_stem(ctx: "PairContext", method_name: str) -> Path | None:
    """`<work_dir>/<method>-<pair>-seed<s>` (work_dir created), where a method keeps its side products; None without one."""
    if ctx.work_dir is None:
        return None
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_.+@" else "_" for ch in ctx.pair_id)
    return ctx.work_dir / f"{method_name}-{safe}-seed{ctx.seed}"


def save_run_metrics(ctx: "PairContext", method_name: str, metrics: dict[str, Any]) -> Path | None:
    """Write a run's training metrics to `<work_stem>.metrics.json` (atomically; the report's training table reads
    them); returns the stem (for further side products) or None without a work dir."""
    stem = work_stem(ctx, method_name)
    if stem is not None:
        atomic_write(f"{stem}.metrics.json", json.dumps(metrics, indent=1, default=str))
    return stem


def merge_config(name: str, defaults: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """`defaults` updated by `config`; a key that is not a default is a clear error (a typo in conf/)."""
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise TypeError(f"{name}: unknown config key(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **config}


METHODS: Registry[type[Method]] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name`")
    METHODS.register(cls.name)(cls)
    return cls


def rank(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: -float(f.uniqueness))


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
            "direction_layer": f.direction_layer, "tokens": f.tokens, "token_ids": f.token_ids,
            "info": f.info, "readout": r,
        })
    tensors.setdefault("_empty", torch.zeros(1))
    with atomic_path(path.with_suffix(".safetensors")) as tmp:
        save_file(tensors, str(tmp))
    atomic_write(path.with_suffix(".json"), json.dumps({"meta": meta, "findings": records}, indent=1, default=float))


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
