"""What a method reports: `Finding`s, each with a declarative `Readout`, and their validation and storage.

A `Finding` is data, not code: its `Readout` is a small declarative recipe (linear read of either model's
residual stream, optional ReLU/threshold, or the difference norm), so findings are saved to disk and scoring
can be rerun without rerunning the method.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .io import atomic_path, atomic_write, dumps

if TYPE_CHECKING:
    from .method import PairContext

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


def read_many(readouts: list[Readout], x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    """[n, len(readouts)]: column j is readouts[j](x_a, x_b). Linear readouts sharing an input norm are one matmul
    per model (a column per readout) instead of one pass over the activations each, which is what makes reading
    50 findings over a 40k-token corpus cheap; the columns equal the per-readout calls up to float summation order."""
    out = torch.empty(x_a.shape[0], len(readouts), dtype=torch.float32)
    groups: dict[str, list[int]] = {}
    for j, r in enumerate(readouts):
        if r.kind == "linear":
            groups.setdefault(r.input_norm, []).append(j)
        else:
            out[:, j] = r(x_a, x_b)
    for norm, cols in groups.items():
        xa, xb = x_a.float(), x_b.float()
        if norm == "rms":
            xa, xb = (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) for x in (xa, xb))
        z = torch.tensor([float(readouts[j].bias) for j in cols]).expand(x_a.shape[0], -1).clone()
        for x, side in ((xa, "w_a"), (xb, "w_b")):
            used = [c for c, j in enumerate(cols) if getattr(readouts[j], side) is not None]
            if used:
                w = torch.stack([getattr(readouts[cols[c]], side).float() for c in used], dim=1)
                z[:, used] += x @ w
        for c, j in enumerate(cols):
            r = readouts[j]
            if r.act == "relu":
                z[:, c] = torch.where(z[:, c] > max(r.threshold, 0.0), z[:, c], torch.zeros_like(z[:, c]))
            elif r.act == "abs":
                z[:, c] = z[:, c].abs()
        out[:, cols] = z
    return out


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
        if hasattr(f, "models"):  # a GroupFinding (core/nway.py): the members it is attributed to and reads
            records[-1] |= {"models": [int(m) for m in f.models], "reads": [int(m) for m in f.reads]}
    tensors.setdefault("_empty", torch.zeros(1))
    with atomic_path(path.with_suffix(".safetensors")) as tmp:
        save_file(tensors, str(tmp))
    atomic_write(path.with_suffix(".json"), dumps({"meta": meta, "findings": records}, indent=1))


def load_findings(path: Path) -> tuple[list[Finding], dict[str, Any]]:
    """The findings `save_findings` wrote (GroupFindings come back as GroupFindings) and their meta."""
    path = Path(path)
    data = json.loads(path.with_suffix(".json").read_text())
    tensors = load_file(str(path.with_suffix(".safetensors")))
    out = []
    for i, rec in enumerate(data["findings"]):
        readout = Readout(**rec["readout"], w_a=tensors.get(f"{i}.w_a"), w_b=tensors.get(f"{i}.w_b"))
        fields = dict(id=rec["id"], uniqueness=rec["uniqueness"], flagged=rec["flagged"], readout=readout, side=rec["side"],
                      direction=tensors.get(f"{i}.direction"), direction_layer=rec["direction_layer"],
                      tokens=rec["tokens"], token_ids=rec["token_ids"], info=rec["info"])
        if "models" in rec:  # saved from a GroupFinding
            from .nway import GroupFinding

            out.append(GroupFinding(**fields, models=tuple(rec["models"]), reads=tuple(rec["reads"])))
        else:
            out.append(Finding(**fields))
    return out, data["meta"]
