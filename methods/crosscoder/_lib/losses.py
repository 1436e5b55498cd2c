"""The sparsity objectives: L1 on decoder-norm-weighted activations (Lindsey et al. 2024) and BatchTopK with an
auxiliary loss on dead latents (Minder, Dumas et al. 2025)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from . import reference as R
from .module import Crosscoder, Ops

if TYPE_CHECKING:
    from .train import TrainConfig


def _mse(x: torch.Tensor, xhat: torch.Tensor) -> torch.Tensor:
    return (x - xhat).pow(2).sum(-1).mean()


def _l1_loss(cc: Crosscoder, xb, lam: float, ops: Ops, cfg: TrainConfig, stats: dict):
    with ops.autocast(xb[0].device):
        f = torch.relu(cc.preacts(xb).float())
        dn = cc.decoder_norms()
        active = f.detach() > 0
        fired = active.any(0)
        sparse = None
        if ops.backend == "triton":
            frac = cfg.sparse_decode_frac
            if frac is None:
                frac = 0.01 if f.is_cuda else 0.125
            width = int(active.sum(1).max())
            if width <= frac * cc.n:
                code = R.dense_to_code(f.detach())
                sparse = ops.decode(cc, code, f[code.rows, code.cols])
        xhat = sparse if sparse is not None else cc.decode(f)
    mse = [_mse(x, xh.float()) for x, xh in zip(xb, xhat)]
    penalty = (f * dn.float()).sum(-1).mean()
    if cfg.log_every:
        stats.update(mse_a=float(mse[0].detach()), mse_b=float(mse[1].detach()), l0=float(active.sum(1).float().mean()),
                     penalty=float(penalty.detach()), lam=lam)
    return sum(mse) + lam * penalty, fired


def _batchtopk_loss(cc: Crosscoder, xb, cfg: TrainConfig, ops: Ops, dead, aux_k: int, step: int, stats: dict):
    bsz = xb[0].shape[0]
    s, dn, value_fn = ops.encode_scores(cc, xb)
    prefilter = float(cc.threshold) * 0.5 if torch.isfinite(cc.threshold) else None
    code = R.batch_topk(s, cfg.k * bsz, prefilter=prefilter)
    vals = value_fn(code)
    xhat = ops.decode(cc, code, vals)
    mse = [_mse(x, xh) for x, xh in zip(xb, xhat)]
    loss = sum(mse)
    if cfg.extra_loss is not None:
        loss = loss + cfg.extra_loss(xb, xhat, stats)
    fired = torch.zeros(cc.n, dtype=torch.bool, device=s.device)
    fired[code.cols] = True
    with torch.no_grad():  # running estimate of the smallest kept score -> inference threshold
        kept = s[code.rows, code.cols]
        if step >= int(cfg.threshold_start_frac * cfg.steps) and kept.numel():
            m = float(kept.min())
            th = float(cc.threshold)
            cc.threshold.fill_(m if not math.isfinite(th) else cfg.threshold_beta * th + (1 - cfg.threshold_beta) * m)
    aux = None
    if dead is not None and bool(dead.any()) and cfg.aux_coeff > 0:
        rows = min(bsz, cfg.aux_rows)
        dead_ids = dead.nonzero().squeeze(1)
        local = R.row_topk(s[:rows].index_select(1, dead_ids), min(aux_k, dead_ids.numel()))
        idx_aux = torch.where(local >= 0, dead_ids[local.clamp(min=0)], torch.full_like(local, -1))
        if bool((idx_aux >= 0).any()):
            code_aux = R.SparseCode.from_padded(idx_aux)
            ehat = ops.decode(cc, code_aux, value_fn(code_aux), bias=False)
            aux = 0.0
            for x, xh, eh in zip(xb, xhat, ehat):
                e = (x[:rows] - xh[:rows]).detach()
                aux = aux + _mse(e, eh) / (e - e.mean(0)).pow(2).sum(-1).mean().clamp(min=1e-8)
            loss = loss + cfg.aux_coeff * aux
    if cfg.log_every:
        stats.update(mse_a=float(mse[0].detach()), mse_b=float(mse[1].detach()), width=float(code.width()),
                     dead=float(dead.float().mean()) if dead is not None else 0.0,
                     aux=float(aux.detach()) if aux is not None else 0.0, threshold=float(cc.threshold))
    return loss, fired


# ----------------------------------------------------------------------------- metrics
