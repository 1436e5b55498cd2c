"""L1 crosscoder (Lindsey et al. 2024, "Sparse Crosscoders for Cross-Layer Features and Model Diffing").

Shared encoder over both models (concatenated per-model encoders), ReLU, one decoder per model;
loss = sum_m ||x_m - x_hat_m||^2 + lambda * sum_i f_i * sum_m ||d_i^m||, lambda ramped linearly
from 0 over the first `l1_ramp_frac` of the steps. Decoder norms sit inside the penalty, so no
renormalisation is needed.

Findings: every latent that fired, ranked by how one-sided its decoder is. With the relative norm
r_i = ||d_i^B|| / (||d_i^A|| + ||d_i^B||), a latent with r >= 0.5 is a B-side candidate with
uniqueness r, otherwise an A-side one with uniqueness 1 - r; flagged when r >= flag_b (B-specific)
or r <= flag_a (A-specific).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...core import Finding, PairContext, register_method
from ._lib.method import CrosscoderConfig, CrosscoderMethod, PairData, relative_norms
from ._lib.module import Crosscoder


@dataclass
class L1Config(CrosscoderConfig):
    steps: int = 125
    l1_coeff: float = 1.0  # lambda, ramped linearly from 0 over l1_ramp_frac of the steps
    l1_ramp_frac: float = 0.05
    data_init_frac: float = 0.5
    dec_init_norm: float = 0.1
    flag_b: float = 0.9  # relative decoder norm r >= flag_b -> B-specific
    flag_a: float = 0.1  # r <= flag_a -> A-specific


@register_method
class L1Crosscoder(CrosscoderMethod):
    name = "l1_crosscoder"
    sparsity = "l1"
    Config = L1Config
    cfg: L1Config

    def init_kwargs(self) -> dict[str, Any]:
        return {"dec_init_norm": self.cfg.dec_init_norm}

    def select(self, ctx: PairContext, cc: Crosscoder, data: PairData, metrics: dict[str, Any]) -> list[Finding]:
        r = relative_norms(cc)
        alive = (metrics["_fires_train"] + metrics["_fires_eval"]) > 0
        score = torch.maximum(r, 1 - r)
        score = torch.where(alive, score, torch.full_like(score, -1.0))
        order = torch.argsort(score, descending=True)[: self.cfg.max_findings]
        out = []
        for i in order.tolist():
            if not alive[i]:
                break
            side = "b" if r[i] >= 0.5 else "a"
            flagged = bool(r[i] >= self.cfg.flag_b) if side == "b" else bool(r[i] <= self.cfg.flag_a)
            out.append((i, side, float(score[i]), flagged, {"rel_norm": float(r[i])}))
        return self.emit(ctx, cc, data, metrics, out)
