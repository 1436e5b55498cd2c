"""The crosscoder itself: a partitioned two-model dictionary, its training loops, metrics and Latent Scaling.

One module covers the whole family:

* Latents are ordered A-exclusive | shared | B-exclusive. Model A owns [0, n_A + n_S), model B owns
  [n_A, n); each model's encoder and decoder are separate `[owned, d_m]` parameters. A plain
  crosscoder is the case n_A = n_B = 0. For the Dedicated Feature Crosscoder the weights that would
  let an exclusive latent read or write the other model do not exist: no loss term, auxiliary loss
  or optimiser state can make them non-zero. `dense_encoder(m)` / `dense_decoder(m)` show the
  effective [n, d_m] matrices (zero rows where m does not own a latent).
* Encoder: z = b_enc + sum_m x_m W_enc_m^T (a concatenation of per-model encoders), f = ReLU(z).
* Sparsity: "l1" (Lindsey et al. 2024: loss sum_m ||x_m - x_hat_m||^2 + lambda sum_i f_i sum_m ||d_i^m||,
  lambda ramped from 0) or "batchtopk" (Minder, Dumas et al. 2025: keep the k*B largest
  f_i * sum_m ||d_i^m|| over the batch; auxiliary loss on dead latents; inference threshold).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn

from ...core.env import pick_threads
from . import reference as R


def _kernels():
    """The Triton module, imported on first use (see kernels.py on TRITON_INTERPRET)."""
    from . import kernels

    return kernels


def triton_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None

log = logging.getLogger(__name__)

SECTIONS = ("a", "shared", "b")


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """'auto' -> 'triton' on CUDA (when Triton imports), else 'torch'."""
    device = torch.device(device)
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_installed() else "torch"
    if backend not in ("torch", "triton"):
        raise ValueError(f"backend must be auto, torch or triton, got {backend!r}")
    if backend == "triton" and not _kernels().available(device):
        raise RuntimeError(
            f"the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 for CPU), got device {device}; "
            "use backend=torch"
        )
    return backend


class Crosscoder(nn.Module):
    def __init__(self, widths: Sequence[int], n_shared: int, n_excl_a: int = 0, n_excl_b: int = 0, *,
                 dec_init_norm: float = 1.0, enc_init_scale: float = 1.0, seed: int = 0, score_norm: str = "sum"):
        super().__init__()
        if score_norm not in ("sum", "mean"):
            raise ValueError(f"score_norm must be sum or mean, got {score_norm!r}")
        self.score_norm = score_norm
        if len(widths) not in (1, 2):
            raise ValueError("a crosscoder here diffs exactly two models (one width: a plain sparse autoencoder)")
        if len(widths) == 1 and (n_excl_a or n_excl_b):
            raise ValueError("a one-model dictionary (sparse autoencoder) has no exclusive sections")
        self.widths = [int(w) for w in widths]
        self.n_excl_a, self.n_shared, self.n_excl_b = int(n_excl_a), int(n_shared), int(n_excl_b)
        n = self.n
        self.ranges: list[tuple[int, int]] = [(0, self.n_excl_a + self.n_shared), (self.n_excl_a, n)][: len(self.widths)]
        g = torch.Generator().manual_seed(int(seed))
        decs, encs = [], []
        for (lo, hi), d in zip(self.ranges, self.widths):
            w = torch.randn(hi - lo, d, generator=g)
            w = w / w.norm(dim=1, keepdim=True) * dec_init_norm
            decs.append(nn.Parameter(w.clone()))
            encs.append(nn.Parameter(w.clone() * enc_init_scale))
        self.W_enc = nn.ParameterList(encs)
        self.W_dec = nn.ParameterList(decs)
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.b_dec = nn.ParameterList([nn.Parameter(torch.zeros(d)) for d in self.widths])
        self.register_buffer("threshold", torch.tensor(float("nan")))  # BatchTopK inference threshold on f*||d||

    # -- layout ----------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.n_excl_a + self.n_shared + self.n_excl_b

    def section_slice(self, section: str) -> slice:
        a, s = self.n_excl_a, self.n_shared
        return {"a": slice(0, a), "shared": slice(a, a + s), "b": slice(a + s, self.n)}[section]

    def section_of(self, i: int) -> str:
        if i < self.n_excl_a:
            return "a"
        return "shared" if i < self.n_excl_a + self.n_shared else "b"

    def owns(self, m: int, i: int) -> bool:
        lo, hi = self.ranges[m]
        return lo <= i < hi

    def enc_row(self, m: int, i: int) -> torch.Tensor | None:
        return self.W_enc[m][i - self.ranges[m][0]] if self.owns(m, i) else None

    def dec_row(self, m: int, i: int) -> torch.Tensor | None:
        return self.W_dec[m][i - self.ranges[m][0]] if self.owns(m, i) else None

    def dense_encoder(self, m: int) -> torch.Tensor:
        """Effective [n, d_m] encoder of model m (zeros where m owns no weights)."""
        lo, hi = self.ranges[m]
        out = torch.zeros(self.n, self.widths[m], device=self.b_enc.device)
        out[lo:hi] = self.W_enc[m].detach()
        return out

    def dense_decoder(self, m: int) -> torch.Tensor:
        lo, hi = self.ranges[m]
        out = torch.zeros(self.n, self.widths[m], device=self.b_enc.device)
        out[lo:hi] = self.W_dec[m].detach()
        return out

    # -- forward pieces --------------------------------------------------------------
    def decoder_norms(self) -> torch.Tensor:
        """sum_m ||d_i^m|| -> [n] (differentiable; the L1 penalty's weights)."""
        return R.decoder_norms(list(self.W_dec), self.ranges, self.n)

    def owners(self) -> torch.Tensor:
        """How many models own each latent (2 shared, 1 exclusive) -> [n] float."""
        out = torch.zeros(self.n, device=self.b_enc.device)
        for lo, hi in self.ranges:
            out[lo:hi] += 1
        return out

    @torch.no_grad()
    def selection_norms(self, dn: torch.Tensor | None = None) -> torch.Tensor:
        """Per-latent factor of the BatchTopK score f_i * factor_i: sum_m ||d_i^m|| ("sum", the paper's
        rule), or that sum over the models owning the latent ("mean": an exclusive latent is not
        out-scored by a shared one whose second decoder is mere leftover norm)."""
        dn = R.decoder_norms([w.detach() for w in self.W_dec], self.ranges, self.n) if dn is None else dn
        return dn / self.owners() if self.score_norm == "mean" else dn

    def per_model_norms(self) -> torch.Tensor:
        return R.per_model_norms([w.detach() for w in self.W_dec], self.ranges, self.n)

    def center(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Encoder input x_m - b_dec_m (pre-encoder bias; b_dec gets no gradient through this path)."""
        return [x - b.detach() for x, b in zip(xs, self.b_dec)]

    def preacts(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """z = b_enc + sum_m (x_m - b_dec_m) W_enc_m^T  -> [B, n]."""
        return R.preacts(self.center(xs), list(self.W_enc), self.b_enc, self.ranges)

    @torch.no_grad()
    def readout_bias(self) -> torch.Tensor:
        """Bias of z as an affine function of the (normalised) uncentred inputs: b_enc - sum_m <b_dec_m, W_enc_m[i]>."""
        out = self.b_enc.detach().clone()
        for w, b, (lo, hi) in zip(self.W_enc, self.b_dec, self.ranges):
            out[lo:hi] -= w.detach() @ b.detach()
        return out

    @torch.no_grad()
    def encode(self, xs: Sequence[torch.Tensor], mode: str = "relu", k: int | None = None) -> torch.Tensor:
        """Dense code [B, n]. mode: relu (L1), threshold (BatchTopK inference), batchtopk (training rule)."""
        f = torch.relu(self.preacts(xs))
        if mode == "relu":
            return f
        dn = self.selection_norms()
        if mode == "threshold":
            if not torch.isfinite(self.threshold):
                raise RuntimeError("this crosscoder has no inference threshold yet")
            return f * (f * dn > self.threshold)
        if mode == "batchtopk":
            code = R.batch_topk(f * dn, (k or 1) * f.shape[0])
            return code.to_dense(f[code.rows, code.cols], self.n)
        raise ValueError(f"unknown encode mode {mode!r}")

    def decode(self, f: torch.Tensor, bias: bool = True) -> list[torch.Tensor]:
        return R.dense_decode(f, list(self.W_dec), self.ranges, list(self.b_dec) if bias else None)


# ----------------------------------------------------------------------------- backends


class Ops:
    """One training backend's encode/select/decode.

    torch (the CPU default): the encoder is a dense matmul with autograd (bf16 autocast on CPUs with
    AMX/AVX512-BF16 when `bf16`), the kept values are gathered from it (so its backward is a dense
    matmul against a scattered gradient, the fastest option on CPU), and the decode is the sparse
    reference (`reference.sparse_decode`, embedding_bag). triton: the fused encoder kernel writes
    the selection score without autograd, the kept values come from `SparseEncodeValues` (row-sparse
    atomic backward) and the decode is the sparse Triton decoder.
    """

    def __init__(self, backend: str, bf16: bool = False):
        self.backend = backend
        self.bf16 = bool(bf16) and backend == "torch"

    def autocast(self, device: torch.device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def encode_scores(self, cc: Crosscoder, xs: Sequence[torch.Tensor]):
        """-> (s [B, n] detached selection score, dnorm [n] detached, value_fn(code) -> vals with grads)."""
        if self.backend == "triton":
            K = _kernels()
            xc = cc.center(xs)
            dn = cc.selection_norms(K.decoder_norms(list(cc.W_dec), cc.ranges, cc.n))
            s = K.encode_scores(xc, [w.detach() for w in cc.W_enc], cc.b_enc, dn, cc.ranges)
            return s, dn, lambda code: K.sparse_encode_values(s, dn, code, xc, list(cc.W_enc), cc.b_enc, cc.ranges)
        with self.autocast(xs[0].device):
            z = cc.preacts(xs)
        f = torch.relu(z.float())
        with torch.no_grad():
            dn = cc.selection_norms()
            s = f.detach() * dn
        return s, dn, lambda code: torch.where(code.cols >= 0, f[code.rows, code.cols.clamp(min=0)], 0.0)

    def decode(self, cc: Crosscoder, code: R.SparseCode, vals, bias: bool = True) -> list[torch.Tensor]:
        biases = list(cc.b_dec) if bias else None
        if self.backend == "triton":
            return _kernels().sparse_decode(code, vals, list(cc.W_dec), cc.ranges, biases)
        return R.sparse_decode(code, vals, list(cc.W_dec), cc.ranges, biases)

    @torch.no_grad()
    def scores(self, cc: Crosscoder, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.encode_scores(cc, xs)[0].detach()


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


def iter_chunks(xs: Sequence[torch.Tensor], chunk: int = 4096):
    for start in range(0, xs[0].shape[0], chunk):
        yield [x[start : start + chunk] for x in xs]


@torch.no_grad()
def evaluate(cc: Crosscoder, xs: Sequence[torch.Tensor], mode: str, k: int | None = None, chunk: int = 4096) -> dict[str, Any]:
    """Explained variance per model, L0, per-latent firing counts and activation mass on xs."""
    n_rows = xs[0].shape[0]
    sse = [0.0, 0.0]
    fires = torch.zeros(cc.n, dtype=torch.long, device=cc.b_enc.device)
    mass = torch.zeros(cc.n, dtype=torch.float64, device=cc.b_enc.device)
    l0 = 0.0
    for xb in iter_chunks(xs, chunk):
        f = cc.encode(xb, mode, k=k)
        xhat = cc.decode(f)
        for m in range(2):
            sse[m] += float((xb[m] - xhat[m]).pow(2).sum())
        active = f > 0
        fires += active.sum(0)
        mass += f.sum(0).double()
        l0 += float(active.sum())
    sst = [float((x - x.mean(0)).pow(2).sum()) for x in xs]
    return {
        "ev_a": 1 - sse[0] / max(sst[0], 1e-12),
        "ev_b": 1 - sse[1] / max(sst[1], 1e-12),
        "l0": l0 / max(n_rows, 1),
        "dead_frac": float((fires == 0).float().mean()),
        "fires": fires.cpu(),
        "mass": mass.float().cpu(),
        "n_tokens": n_rows,
    }


@torch.no_grad()
def latent_codes(cc: Crosscoder, xs: Sequence[torch.Tensor], latents: torch.Tensor, mode: str) -> torch.Tensor:
    """Codes of a subset of latents only -> [B, c] (relu or threshold mode: both are per latent)."""
    latents = latents.to(cc.b_enc.device)
    z = cc.b_enc.detach()[latents].expand(xs[0].shape[0], -1).clone()
    for m, x in enumerate(cc.center(xs)):
        z += x @ cc.dense_encoder(m)[latents].t()
    f = torch.relu(z)
    if mode == "threshold":
        f = f * (f * cc.selection_norms()[latents] > cc.threshold)
    elif mode != "relu":
        raise ValueError(f"latent_codes supports relu and threshold, not {mode!r}")
    return f


@torch.no_grad()
def latent_mass(cc: Crosscoder, xs: Sequence[torch.Tensor], latents: torch.Tensor, mode: str, chunk: int = 8192) -> torch.Tensor:
    """Sum of each latent's activation over all rows of xs -> [c] (cpu, float64)."""
    out = torch.zeros(latents.numel(), dtype=torch.float64)
    for xb in iter_chunks(xs, chunk):
        out += latent_codes(cc, xb, latents, mode).sum(0).double().cpu()
    return out


@torch.no_grad()
def latent_scaling(cc: Crosscoder, xs: Sequence[torch.Tensor], latents: torch.Tensor, own: torch.Tensor,
                   mode: str, k: int | None = None, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Latent Scaling (Minder, Dumas et al. 2025), closed form.

    For latent i with direction u_i = d_i^{own} (the decoder row of the model it is specific to) and
    each model m, beta_i^m = sum_t f_i(t) <u_i, y_m(t)> / (||u_i||^2 sum_t f_i(t)^2) for two targets:
      r:   y_m = x_hat_m - b_dec_m                    (what the crosscoder reconstructs in m)
      eps: y_m = x_m - x_hat_m + f_i d_i^m            (m's error plus the latent's own contribution)
    nu = beta^{other} / beta^{own}: ~0 if the latent is absent from the other model, ~ its relative
    strength if present but shrunk there. Needs equal widths (u_i is read in both models' spaces).
    Returns beta_r, beta_eps [2, c] and nu_r, nu_eps [c] (nan where the latent never fires).
    """
    if cc.widths[0] != cc.widths[1]:
        raise ValueError("Latent Scaling needs both models to have the same width")
    latents = latents.to(cc.b_enc.device)
    own = own.to(cc.b_enc.device).long()
    c, d = latents.numel(), cc.widths[0]
    dec = [cc.dense_decoder(m)[latents] for m in range(2)]  # [c, d]
    u = torch.where(own[:, None] == 1, dec[1], dec[0])
    gr = [torch.zeros(c, d, dtype=torch.float64, device=u.device) for _ in range(2)]
    ge = [torch.zeros(c, d, dtype=torch.float64, device=u.device) for _ in range(2)]
    s2 = torch.zeros(c, dtype=torch.float64, device=u.device)
    for xb in iter_chunks(xs, chunk):
        f = cc.encode(xb, mode, k=k)
        xhat = cc.decode(f)
        fl = f[:, latents].double()
        for m in range(2):
            gr[m] += fl.t() @ (xhat[m] - cc.b_dec[m]).double()
            ge[m] += fl.t() @ (xb[m] - xhat[m]).double()
        s2 += fl.pow(2).sum(0)
    ud = u.double()
    den = s2 * ud.pow(2).sum(1)
    beta_r = torch.stack([(gr[m] * ud).sum(1) / den for m in range(2)])
    beta_e = torch.stack([((ge[m] * ud).sum(1) + s2 * (dec[m].double() * ud).sum(1)) / den for m in range(2)])
    ar = torch.arange(c, device=u.device)
    nu_r = beta_r[1 - own, ar] / beta_r[own, ar]
    nu_e = beta_e[1 - own, ar] / beta_e[own, ar]
    bad = den <= 0
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=u.device)
    return {
        "beta_r": beta_r.float().cpu(), "beta_eps": beta_e.float().cpu(),
        "nu_r": torch.where(bad, nan, nu_r).float().cpu(), "nu_eps": torch.where(bad, nan, nu_e).float().cpu(),
    }
