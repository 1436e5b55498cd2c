"""Training a crosscoder: the config, the loop (schedule, data init, dead-latent tracking), the inference threshold."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ....core.env import pick_threads
from . import reference as R
from .losses import _batchtopk_loss, _l1_loss
from .module import Crosscoder, Ops, resolve_backend

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    sparsity: str = "batchtopk"  # "l1" | "batchtopk"
    steps: int = 300
    batch_size: int = 256
    lr: float = 3e-3
    warmup_frac: float = 0.05
    decay_frac: float = 0.2  # linear decay to 0 over the last fraction of steps
    grad_clip: float = 1.0
    # l1
    l1_coeff: float = 1.0
    l1_ramp_frac: float = 0.05
    # batchtopk
    k: int = 32
    aux_k: int | None = 64  # dead latents per token in the auxiliary loss (None: d/2)
    aux_coeff: float = 1 / 32
    dead_tokens: int = 20_000  # a latent is dead after this many training tokens without firing
    threshold_beta: float = 0.99
    threshold_start_frac: float = 0.1
    threshold_refit_batches: int = 16  # after training: re-estimate with the final weights (0 = keep the EMA)
    # execution
    backend: str = "torch"
    bf16: bool = False  # torch path: bf16 autocast for the dense matmuls (CPUs with AMX; see common.py)
    aux_rows: int = 256  # the auxiliary loss uses at most this many tokens of each batch
    # l1 + triton: decode sparsely when the widest row has <= frac*n actives. None = by device: 0.125
    # (interpreter/CPU) or 0.01 on CUDA, where a dense tf32 decode beats the sparse kernels above ~1%
    # density (H100: sparse fwd+bwd ~1.6 ns per kept entry vs dense ~18 ps per (token, latent))
    sparse_decode_frac: float | None = None
    adam_betas: tuple[float, float] = (0.9, 0.999)
    threads: int | str | None = None  # torch CPU threads while training: None = leave, "auto" = calibrate, int
    seed: int = 0
    log_every: int = 0


@dataclass
class TrainResult:
    seconds: float
    steps: int
    tokens_seen: int
    final_loss: float
    dead_frac_train: float  # not fired within the last dead_tokens training tokens, at the end
    history: list[dict[str, float]] = field(default_factory=list)
    threads: int = 0


def _schedule(cfg: TrainConfig):
    warm = max(1, int(cfg.warmup_frac * cfg.steps))
    decay_start = int((1 - cfg.decay_frac) * cfg.steps)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if step >= decay_start and cfg.decay_frac > 0:
            return max(0.0, (cfg.steps - step) / max(1, cfg.steps - decay_start))
        return 1.0

    return f


@torch.no_grad()
def init_from_data(cc: Crosscoder, xs: Sequence[torch.Tensor], seed: int = 0, data_frac: float = 0.5) -> None:
    """b_dec_m = mean of model m's rows; a `data_frac` share of the latents start from centred training
    rows (decoder direction per model, same norm as the random init; encoder rows alike), which
    keeps most latents alive in short runs."""
    for b, x in zip(cc.b_dec, xs):
        b.copy_(x.mean(0))
    n_rows = xs[0].shape[0]
    g = torch.Generator().manual_seed(seed + 7)
    n_data = int(data_frac * cc.n)
    if n_data == 0 or n_rows == 0:
        return
    latents = torch.randperm(cc.n, generator=g)[:n_data]
    rows = torch.randint(0, n_rows, (n_data,), generator=g)
    for m, (lo, hi) in enumerate(cc.ranges):
        keep = (latents >= lo) & (latents < hi)
        li, ri = latents[keep] - lo, rows[keep].to(xs[m].device)
        v = xs[m][ri] - cc.b_dec[m]
        v = v / v.norm(dim=1, keepdim=True).clamp(min=1e-8)
        for w in (cc.W_dec[m], cc.W_enc[m]):
            w[li] = v * w[li].norm(dim=1, keepdim=True)


def train(cc: Crosscoder, xs: Sequence[torch.Tensor], cfg: TrainConfig) -> TrainResult:
    """Train in place on normalised activations xs = [x_a [N, d_a], x_b [N, d_b]] (same rows)."""
    threads = pick_threads(cfg.threads, cc.b_enc.device)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        res = _train(cc, xs, cfg)
    finally:
        torch.set_num_threads(old_threads)
    res.threads = threads or old_threads
    return res


def _train(cc: Crosscoder, xs: Sequence[torch.Tensor], cfg: TrainConfig) -> TrainResult:
    dev = cc.b_enc.device
    n_rows = xs[0].shape[0]
    bsz = min(cfg.batch_size, n_rows)
    backend = resolve_backend(cfg.backend, dev)
    ops = Ops(backend, cfg.bf16)
    # fused Adam: one kernel per parameter instead of ~10 ops (the unfused step was 15 ms of a 60 ms CPU step)
    opt = torch.optim.Adam(cc.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas), fused=dev.type in ("cpu", "cuda"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))
    g = torch.Generator().manual_seed(cfg.seed + 1)
    perm, cursor = torch.randperm(n_rows, generator=g), 0
    last_fired = torch.zeros(cc.n, dtype=torch.long, device=dev)
    aux_k = cfg.aux_k or max(1, min(cc.widths) // 2)
    ramp = max(1, int(cfg.l1_ramp_frac * cfg.steps))
    t_start = time.perf_counter()
    history: list[dict[str, float]] = []
    tokens = 0
    loss_val = float("nan")
    for step in range(cfg.steps):
        if cursor + bsz > n_rows:
            perm, cursor = torch.randperm(n_rows, generator=g), 0
        rows = perm[cursor : cursor + bsz].to(dev)
        cursor += bsz
        xb = [x.index_select(0, rows) for x in xs]
        stats: dict[str, float] = {}
        if cfg.sparsity == "l1":
            lam = cfg.l1_coeff * min(1.0, (step + 1) / ramp)
            loss, fired = _l1_loss(cc, xb, lam, ops, cfg, stats)
        elif cfg.sparsity == "batchtopk":
            dead = (tokens - last_fired) > cfg.dead_tokens if tokens > cfg.dead_tokens else None
            loss, fired = _batchtopk_loss(cc, xb, cfg, ops, dead, aux_k, step, stats)
        else:
            raise ValueError(f"unknown sparsity {cfg.sparsity!r}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(cc.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        tokens += bsz
        last_fired[fired] = tokens
        loss_val = float(loss.detach())
        if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            stats.update(step=step, loss=loss_val, lr=sched.get_last_lr()[0])
            history.append(stats)
            log.info("crosscoder step %d %s", step, {k: round(v, 4) for k, v in stats.items()})
    if cfg.sparsity == "batchtopk":
        refit_threshold(cc, xs, cfg, ops, g)
    dead_frac = float(((tokens - last_fired) > min(cfg.dead_tokens, tokens)).float().mean()) if tokens else 1.0
    return TrainResult(time.perf_counter() - t_start, cfg.steps, tokens, loss_val, dead_frac, history)


@torch.no_grad()
def refit_threshold(cc: Crosscoder, xs: Sequence[torch.Tensor], cfg: TrainConfig, ops: "Ops", g: torch.Generator) -> None:
    """The same estimator as during training (the smallest score a batch keeps), averaged over
    `threshold_refit_batches` batches with the final weights; the EMA lags when scores drift during a
    short run (measured: inference L0 about half of k without the refit)."""
    n_rows = xs[0].shape[0]
    bsz = min(cfg.batch_size, n_rows)
    batches = cfg.threshold_refit_batches if cfg.threshold_refit_batches > 0 else (0 if torch.isfinite(cc.threshold) else 1)
    mins = []
    for _ in range(batches):
        rows = torch.randint(0, n_rows, (bsz,), generator=g).to(xs[0].device)
        s = ops.scores(cc, [x.index_select(0, rows) for x in xs])
        code = R.batch_topk(s, cfg.k * bsz)
        if code.nnz:
            mins.append(float(s[code.rows, code.cols].min()))
    if mins:
        cc.ema_threshold = float(cc.threshold)
        cc.threshold.fill_(sum(mins) / len(mins))
