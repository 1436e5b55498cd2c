"""Training a crosscoder: the config, the loop (schedule, data init, dead-latent tracking), the inference threshold."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch
from tqdm.auto import tqdm

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
    # lr is tuned for this many latents: a wider dictionary trains with lr * sqrt(lr_width / n), the 1/sqrt(n)
    # scaling of Gao et al. 2024 (narrower ones keep lr). None: lr at every width
    lr_width: int | None = None
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
    threshold_beta: float = 0.99  # EMA of the smallest kept score while training (prefilter; metric threshold_ema)
    threshold_start_frac: float = 0.1
    # inference threshold, fitted after training with the final weights on calibration rows (`fit_threshold`:
    # rule "l0" gives inference L0 = k on them, "ev" the best-reconstructing threshold with L0 in [k/span, k*span]).
    # `threshold_calib_frac` of the rows are kept out of the gradient steps for it (0: fit on training rows); at
    # most `threshold_refit_rows` rows (0: keep the EMA)
    threshold_calib_frac: float = 0.1
    threshold_refit_rows: int = 4096
    threshold_rule: str = "ev"  # "ev": best reconstruction of them among L0 in [k/span, k*span]; "l0": L0 = k
    threshold_l0_span: float = 2.0
    # a term added to the BatchTopK loss: extra_loss(xb, xhat, stats) -> scalar, from the batch's rows and their
    # reconstructions (both [B, d_m] per model; the delta_crosscoder's term on B - A). None: the plain loss
    extra_loss: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], dict], torch.Tensor] | None = None
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
    progress: bool = False  # a progress bar over the steps (the run's `progress` option, set by the method)
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
    train_rows: int = 0  # rows the gradient steps drew from
    calib_rows: int = 0  # rows kept out of training to fit the inference threshold on


def effective_lr(cfg: TrainConfig, n: int) -> float:
    """cfg.lr, times sqrt(lr_width / n) for a dictionary wider than `lr_width`."""
    if cfg.lr_width and n > cfg.lr_width:
        return cfg.lr * math.sqrt(cfg.lr_width / n)
    return cfg.lr


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


class BatchSource(Protocol):
    """Where the training loop takes its batches from: `next()` gives one batch [x_a [B, d_a], x_b [B, d_b]] on the
    crosscoder's device; `batch_size` is B."""

    batch_size: int

    def next(self) -> list[torch.Tensor]: ...


class StoredBatches:
    """Batches from rows held in memory: a seeded permutation of `rows` (indices into xs) served `batch_size` rows at
    a time, permuted afresh when fewer than a batch remain (they are skipped for that epoch)."""

    def __init__(self, xs: Sequence[torch.Tensor], rows: torch.Tensor, batch_size: int, seed: int):
        self.xs, self.rows, self.batch_size = xs, rows, batch_size
        self.g = torch.Generator().manual_seed(seed)
        self.perm, self.cursor = torch.randperm(rows.numel(), generator=self.g), 0

    def next(self) -> list[torch.Tensor]:
        n = self.rows.numel()
        if self.cursor + self.batch_size > n:
            self.perm, self.cursor = torch.randperm(n, generator=self.g), 0
        rows = self.rows[self.perm[self.cursor : self.cursor + self.batch_size]].to(self.xs[0].device)
        self.cursor += self.batch_size
        return [x.index_select(0, rows) for x in self.xs]


def train(cc: Crosscoder, xs: Sequence[torch.Tensor], cfg: TrainConfig, batches: BatchSource | None = None) -> TrainResult:
    """Train in place on normalised activations xs = [x_a [N, d_a], x_b [N, d_b]] (same rows). The gradient steps draw
    from `batches` (default: `StoredBatches` over xs less the threshold-calibration rows); the inference threshold is
    fitted on xs's calibration rows (`split_calibration`) either way."""
    threads = pick_threads(cfg.threads, cc.b_enc.device)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        res = _train(cc, xs, cfg, batches)
    finally:
        torch.set_num_threads(old_threads)
    res.threads = threads or old_threads
    return res


def _train(cc: Crosscoder, xs: Sequence[torch.Tensor], cfg: TrainConfig, batches: BatchSource | None) -> TrainResult:
    dev = cc.b_enc.device
    n_rows = xs[0].shape[0]
    backend = resolve_backend(cfg.backend, dev)
    ops = Ops(backend, cfg.bf16)
    # fused Adam: one kernel per parameter instead of ~10 ops (the unfused step was 15 ms of a 60 ms CPU step)
    opt = torch.optim.Adam(cc.parameters(), lr=effective_lr(cfg, cc.n), betas=tuple(cfg.adam_betas), fused=dev.type in ("cpu", "cuda"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))
    train_rows, calib_rows = split_calibration(n_rows, cfg)
    n_train = train_rows.numel()
    if batches is None:
        batches = StoredBatches(xs, train_rows, min(cfg.batch_size, n_rows, n_train), cfg.seed + 1)
    bsz = batches.batch_size
    last_fired = torch.zeros(cc.n, dtype=torch.long, device=dev)
    aux_k = cfg.aux_k or max(1, min(cc.widths) // 2)
    ramp = max(1, int(cfg.l1_ramp_frac * cfg.steps))
    t_start = time.perf_counter()
    history: list[dict[str, float]] = []
    tokens = 0
    loss_val = float("nan")
    for step in tqdm(range(cfg.steps), desc="train crosscoder", unit="step", disable=not cfg.progress, leave=False):
        xb = batches.next()
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
        refit_threshold(cc, xs, cfg, calib_rows if calib_rows.numel() else train_rows)
    dead_frac = float(((tokens - last_fired) > min(cfg.dead_tokens, tokens)).float().mean()) if tokens else 1.0
    return TrainResult(time.perf_counter() - t_start, cfg.steps, tokens, loss_val, dead_frac, history,
                       train_rows=n_train, calib_rows=int(calib_rows.numel()))


def split_calibration(n_rows: int, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, calibration rows): a seeded `threshold_calib_frac` share of the rows (BatchTopK only, at
    most `threshold_refit_rows`, none when fewer than 2 rows would remain for training) never enters a
    gradient step; the inference threshold is fitted on them."""
    n_cal = 0
    if cfg.sparsity == "batchtopk" and cfg.threshold_calib_frac > 0 and cfg.threshold_refit_rows > 0:
        n_cal = min(int(cfg.threshold_calib_frac * n_rows), cfg.threshold_refit_rows)
        if n_rows - n_cal < 2:
            n_cal = 0
    if n_cal == 0:
        return torch.arange(n_rows), torch.arange(0)
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(cfg.seed + 5))
    return perm[n_cal:].sort().values, perm[:n_cal].sort().values


@torch.no_grad()
def _chunk_scores(cc: Crosscoder, xb: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(f = ReLU(z), selection score s = f * selection norm) of one chunk of rows, [B, n] each, computed as
    `cc.encode` computes them at inference (fp32, no autocast): a threshold fitted on the training path's bf16
    scores would sit off the inference rule's by bf16 rounding."""
    f = torch.relu(cc.preacts(xb).float())
    return f, f * cc.selection_norms()


@torch.no_grad()
def quantile_threshold(cc: Crosscoder, xs: Sequence[torch.Tensor], k: float | Sequence[float],
                       chunk: int = 1024) -> float | list[float]:
    """The (k*N)-th largest selection score f_i * ||d_i|| over the N rows of xs: the threshold at which these
    rows keep k latents per row on average (BatchTopK over one batch of all N rows). Scores are taken in
    chunks, keeping a running top-(k*N). A list of k gives a list of thresholds (one pass)."""
    ks = [k] if isinstance(k, (int, float)) else list(k)
    n = xs[0].shape[0]
    keep = max(1, int(round(max(ks) * n)))
    top = None
    for s0 in range(0, n, chunk):
        s = _chunk_scores(cc, [x[s0 : s0 + chunk] for x in xs])[1].flatten()
        cand = s if top is None else torch.cat([top, s])
        top = torch.topk(cand, keep, sorted=False).values if cand.numel() > keep else cand
    if top is None or top.numel() == 0:
        out = [float("nan")] * len(ks)
    else:
        top = top.sort(descending=True).values
        out = []
        for kk in ks:
            v = float(top[min(top.numel(), max(1, int(round(kk * n)))) - 1])
            out.append(v if v > 0 else float(top[top > 0].min()) if bool((top > 0).any()) else 0.0)
    return out[0] if isinstance(k, (int, float)) else out


@torch.no_grad()
def reconstruction_at(cc: Crosscoder, xs: Sequence[torch.Tensor], thresholds: Sequence[float],
                      chunk: int = 1024) -> list[float]:
    """Mean explained variance over the models of xs when coded with each threshold (inference rule
    f_i * [f_i * ||d_i|| > t]); one encode per chunk, a sparse decode per threshold."""
    lo_t = min(thresholds)
    sse = torch.zeros(len(thresholds), len(xs), dtype=torch.float64)
    for s0 in range(0, xs[0].shape[0], chunk):
        xb = [x[s0 : s0 + chunk] for x in xs]
        f, s = _chunk_scores(cc, xb)
        rows, cols = (s > lo_t).nonzero(as_tuple=True)
        sv, fv = s[rows, cols], f[rows, cols]
        flat = rows * cc.n + cols
        for j, t in enumerate(thresholds):
            keep = sv > t
            code = R.SparseCode.from_flat(flat[keep], cc.n, xb[0].shape[0])
            xh = cc.decode_sparse(code, fv[keep])
            for m, (x, h) in enumerate(zip(xb, xh)):
                sse[j, m] += float((x - h).pow(2).sum())
    sst = torch.tensor([float((x - x.mean(0)).pow(2).sum()) for x in xs], dtype=torch.float64).clamp(min=1e-12)
    return (1 - sse / sst).mean(1).tolist()


@torch.no_grad()
def fit_threshold(cc: Crosscoder, xs: Sequence[torch.Tensor], cfg: TrainConfig) -> float:
    """The inference threshold on the rows xs (`threshold_rule`): "l0": inference L0 = k on them
    (`quantile_threshold`); "ev": of the thresholds giving L0 = k * span^(j/4), j = -4..4 on them
    (span = `threshold_l0_span`), the one that reconstructs them best (mean EV over the models)."""
    if cfg.threshold_rule == "l0" or cfg.threshold_l0_span <= 1:
        return quantile_threshold(cc, xs, cfg.k)
    if cfg.threshold_rule != "ev":
        raise ValueError(f"threshold_rule must be ev or l0, got {cfg.threshold_rule!r}")
    l0s = [cfg.k * cfg.threshold_l0_span ** (j / 4) for j in range(-4, 5)]
    ts = quantile_threshold(cc, xs, l0s)
    ts = [t for t in ts if t == t]
    if not ts:
        return float("nan")
    evs = reconstruction_at(cc, xs, ts)
    return ts[max(range(len(ts)), key=lambda j: evs[j])]


@torch.no_grad()
def refit_threshold(cc: Crosscoder, xs: Sequence[torch.Tensor], cfg: TrainConfig, rows: torch.Tensor) -> None:
    """Inference threshold from the final weights: `fit_threshold` on at most `threshold_refit_rows` of `rows`
    (the calibration rows when there are any, which no gradient step has seen). Fitted on training rows, the
    threshold that keeps k latents per row kept 1.3-2.2x k on held-out text and lost held-out EV (SmolLM2
    rows, 16,384 latents: 0.717 vs 0.753 with batch-top-k inference; scripts/compare_crosscoder.py). The
    training EMA is kept as `cc.ema_threshold`."""
    if cfg.threshold_refit_rows <= 0 and torch.isfinite(cc.threshold):
        return
    if rows.numel() > cfg.threshold_refit_rows > 0:  # a seeded random subset (store order is by text length)
        pick = torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(cfg.seed + 6))
        rows = rows[pick[: cfg.threshold_refit_rows].sort().values]
    rows = rows.to(xs[0].device)
    t = fit_threshold(cc, [x.index_select(0, rows) for x in xs], cfg)
    if t == t:
        cc.ema_threshold = float(cc.threshold)
        cc.threshold.fill_(t)
