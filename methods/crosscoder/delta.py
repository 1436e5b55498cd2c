"""Delta-Crosscoder (Kassem, Jiralerspong, Rostamzadeh & Farnadi 2026, arXiv 2603.04426).

The BatchTopK crosscoder (`batchtopk.py`) with one more loss term, on the difference between the two models'
activations, so the dictionary must also reconstruct B - A well and difference directions get latents of their own.
The paper's abstract says "BatchTopK sparsity with a delta-based loss prioritizing directions that change between
models"; its exact loss could not be read here, so this is the version implemented (on one batch of B rows, each
model's rows normalised as the BatchTopK crosscoder normalises them):

    loss = ||x_A - x^_A||^2 + ||x_B - x^_B||^2 + delta_coeff * ||(x_B - x_A) - (x^_B - x^_A)||^2 + aux

each squared norm summed over the width and averaged over the batch (exactly as the BatchTopK reconstruction terms),
aux the BatchTopK auxiliary loss on dead latents, unchanged. With errors e_m = x_m - x^_m the added term is
||e_B - e_A||^2: it charges errors that differ between the models, not errors both share. delta_coeff = 0 is the
BatchTopK crosscoder exactly (same dictionary for the same seed and data). x_A and x_B are the normalised rows (each
model scaled by its own scalar to mean norm sqrt(d)), so B - A is taken in those units; it needs a shared activation
space (one architecture and tokenizer), elsewhere the method is not applicable.

Everything else is `batchtopk_crosscoder`'s: data preparation, training loop, BatchTopK selection, inference
threshold (fitted for the two models' reconstruction), latent scoring (relative decoder norm -> side, Latent
Scaling, uniqueness), readouts and findings. One more metric: `ev_delta`, the held-out share of the variance of
x_B - x_A that x^_B - x^_A explains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from ...core import PairContext, register_method
from ._lib.batchtopk_base import BatchTopKBase, BatchTopKConfig
from ._lib.evaluate import iter_chunks
from ._lib.losses import _mse
from ._lib.method import PairData
from ._lib.module import Crosscoder
from ._lib.train import TrainConfig


@dataclass
class DeltaCrosscoderConfig(BatchTopKConfig):
    # lambda_delta: weight of ||(x_B - x_A) - (x^_B - x^_A)||^2 beside the two reconstruction terms (0: the BatchTopK
    # crosscoder); 1.0 is our choice, not the paper's (its value could not be read here)
    delta_coeff: float = 1.0


def delta_term(xs: Sequence[torch.Tensor], xhat: Sequence[torch.Tensor]) -> torch.Tensor:
    """||(x_B - x_A) - (x^_B - x^_A)||^2, summed over the width and averaged over the rows."""
    return _mse(xs[1] - xs[0], xhat[1] - xhat[0])


@dataclass(frozen=True)
class DeltaLoss:
    """The added term as `TrainConfig.extra_loss`: coeff * delta_term (and `delta` in the logged stats)."""

    coeff: float
    log: bool = False

    def __call__(self, xs: Sequence[torch.Tensor], xhat: Sequence[torch.Tensor], stats: dict) -> torch.Tensor:
        term = delta_term(xs, xhat)
        if self.log:
            stats["delta"] = float(term.detach())
        return self.coeff * term


@torch.no_grad()
def delta_ev(cc: Crosscoder, xs: Sequence[torch.Tensor], mode: str, k: int | None = None) -> float:
    """Share of the variance of x_B - x_A over the rows xs that x^_B - x^_A explains (inference code `mode`)."""
    sse = 0.0
    for xb in iter_chunks(xs):
        xh = cc.decode_code(cc.encode(xb, mode, k=k))
        sse += float(((xb[1] - xb[0]) - (xh[1] - xh[0])).pow(2).sum())
    d = xs[1] - xs[0]
    return 1 - sse / max(float((d - d.mean(0)).pow(2).sum()), 1e-12)


@register_method
class DeltaCrosscoder(BatchTopKBase):
    name = "delta_crosscoder"
    Config = DeltaCrosscoderConfig
    cfg: DeltaCrosscoderConfig
    cross_architecture: ClassVar[bool] = False  # x_B - x_A needs one activation space

    def train_config(self, ctx: PairContext, backend: str) -> TrainConfig:
        tc = super().train_config(ctx, backend)
        tc.extra_loss = DeltaLoss(self.cfg.delta_coeff, log=bool(tc.log_every))
        return tc

    def fit(self, ctx: PairContext) -> tuple[Crosscoder, PairData, dict[str, Any]]:
        ctx.require_shared_space("the Delta-Crosscoder (its loss reconstructs x_B - x_A)")
        cc, data, metrics = super().fit(ctx)
        metrics["ev_delta"] = delta_ev(cc, data.eval, self.eval_mode(), k=metrics.get("k"))
        return cc, data, metrics
