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

from . import kernels as K
from . import reference as R

log = logging.getLogger(__name__)

SECTIONS = ("a", "shared", "b")


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """'auto' -> 'triton' on CUDA (when Triton imports), else 'torch'."""
    device = torch.device(device)
    if backend == "auto":
        return "triton" if device.type == "cuda" and K.HAVE_TRITON else "torch"
    if backend not in ("torch", "triton"):
        raise ValueError(f"backend must be auto, torch or triton, got {backend!r}")
    if backend == "triton" and not K.available(device):
        raise RuntimeError(
            f"the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 for CPU), got device {device}; "
            "use backend=torch"
        )
    return backend


class Crosscoder(nn.Module):
    def __init__(self, widths: Sequence[int], n_shared: int, n_excl_a: int = 0, n_excl_b: int = 0, *,
                 dec_init_norm: float = 1.0, enc_init_scale: float = 1.0, seed: int = 0):
        super().__init__()
        if len(widths) != 2:
            raise ValueError("a crosscoder here diffs exactly two models")
        self.widths = [int(w) for w in widths]
        self.n_excl_a, self.n_shared, self.n_excl_b = int(n_excl_a), int(n_shared), int(n_excl_b)
        n = self.n
        self.ranges: list[tuple[int, int]] = [(0, self.n_excl_a + self.n_shared), (self.n_excl_a, n)]
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
        return R.decoder_norms(list(self.W_dec), self.ranges, self.n)

    def per_model_norms(self) -> torch.Tensor:
        return R.per_model_norms([w.detach() for w in self.W_dec], self.ranges, self.n)

    def preacts(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return R.preacts(xs, list(self.W_enc), self.b_enc, self.ranges)

    @torch.no_grad()
    def encode(self, xs: Sequence[torch.Tensor], mode: str = "relu", k: int | None = None) -> torch.Tensor:
        """Dense code [B, n]. mode: relu (L1), threshold (BatchTopK inference), batchtopk (training rule)."""
        f = torch.relu(self.preacts(xs))
        if mode == "relu":
            return f
        dn = self.decoder_norms()
        if mode == "threshold":
            if not torch.isfinite(self.threshold):
                raise RuntimeError("this crosscoder has no inference threshold yet")
            return f * (f * dn > self.threshold)
        if mode == "batchtopk":
            idx = R.batch_topk(f * dn, (k or 1) * f.shape[0])
            return R.sparse_to_dense(idx, f.gather(1, idx.clamp(min=0)), self.n)
        raise ValueError(f"unknown encode mode {mode!r}")

    def decode(self, f: torch.Tensor, bias: bool = True) -> list[torch.Tensor]:
        return R.dense_decode(f, list(self.W_dec), self.ranges, list(self.b_dec) if bias else None)


# ----------------------------------------------------------------------------- backends


class Ops:
    """The sparse training ops of one backend (torch reference or Triton kernels)."""

    def __init__(self, backend: str, select_bf16: bool = False):
        self.backend = backend
        self.select_bf16 = select_bf16 and backend == "torch"

    @torch.no_grad()
    def dnorm(self, cc: Crosscoder) -> torch.Tensor:
        if self.backend == "triton":
            return K.decoder_norms(list(cc.W_dec), cc.ranges, cc.n)
        return R.decoder_norms([w.detach() for w in cc.W_dec], cc.ranges, cc.n)

    @torch.no_grad()
    def scores(self, cc: Crosscoder, xs: Sequence[torch.Tensor], dnorm: torch.Tensor) -> torch.Tensor:
        if self.backend == "triton":
            return K.encode_scores(xs, [w.detach() for w in cc.W_enc], cc.b_enc, dnorm, cc.ranges)
        if self.select_bf16:  # selection only; the kept values are recomputed in fp32
            z = R.preacts([x.bfloat16() for x in xs], [w.detach().bfloat16() for w in cc.W_enc],
                          cc.b_enc.detach().bfloat16(), cc.ranges).float()
        else:
            z = R.preacts(xs, [w.detach() for w in cc.W_enc], cc.b_enc.detach(), cc.ranges)
        return R.scaled_relu(z, dnorm)

    def values(self, cc: Crosscoder, xs, s, dnorm, idx) -> torch.Tensor:
        if self.backend == "triton":
            return K.sparse_encode_values(s, dnorm, idx, xs, list(cc.W_enc), cc.b_enc, cc.ranges)
        return R.sparse_encode_values(xs, list(cc.W_enc), cc.b_enc, idx, cc.ranges)

    def decode(self, cc: Crosscoder, idx, vals, bias: bool = True) -> list[torch.Tensor]:
        biases = list(cc.b_dec) if bias else None
        if self.backend == "triton":
            return K.sparse_decode(idx, vals, list(cc.W_dec), cc.ranges, biases)
        return R.sparse_decode(idx, vals, list(cc.W_dec), cc.ranges, biases)


# ----------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    sparsity: str = "batchtopk"  # "l1" | "batchtopk"
    steps: int = 300
    batch_size: int = 512
    lr: float = 2e-3
    warmup_frac: float = 0.05
    decay_frac: float = 0.2  # linear decay to 0 over the last fraction of steps
    grad_clip: float = 1.0
    # l1
    l1_coeff: float = 1.0
    l1_ramp_frac: float = 0.05
    # batchtopk
    k: int = 32
    aux_k: int | None = None  # default d/2
    aux_coeff: float = 1 / 32
    dead_tokens: int = 20_000  # a latent is dead after this many training tokens without firing
    threshold_beta: float = 0.99
    threshold_start_frac: float = 0.1
    # execution
    backend: str = "torch"
    select_bf16: bool = False
    sparse_decode_frac: float = 0.125  # l1 + triton: decode sparsely when the widest row has <= frac*n actives
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


def init_from_data(cc: Crosscoder, xs: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for b, x in zip(cc.b_dec, xs):
            b.copy_(x.mean(0))


def train(cc: Crosscoder, xs: Sequence[torch.Tensor], cfg: TrainConfig) -> TrainResult:
    """Train in place on normalised activations xs = [x_a [N, d_a], x_b [N, d_b]] (same rows)."""
    dev = cc.b_enc.device
    n_rows = xs[0].shape[0]
    bsz = min(cfg.batch_size, n_rows)
    backend = resolve_backend(cfg.backend, dev)
    ops = Ops(backend, cfg.select_bf16)
    opt = torch.optim.Adam(cc.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
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
    if cfg.sparsity == "batchtopk" and not torch.isfinite(cc.threshold):
        with torch.no_grad():  # too few steps to start the running estimate: take it from one batch
            xb = [x[:bsz] for x in xs]
            dn = ops.dnorm(cc)
            s = ops.scores(cc, xb, dn)
            idx = R.batch_topk(s, cfg.k * bsz)
            cc.threshold.fill_(float(s.gather(1, idx.clamp(min=0))[idx >= 0].min()))
    dead_frac = float(((tokens - last_fired) > min(cfg.dead_tokens, tokens)).float().mean()) if tokens else 1.0
    return TrainResult(time.perf_counter() - t_start, cfg.steps, tokens, loss_val, dead_frac, history)


def _mse(x: torch.Tensor, xhat: torch.Tensor) -> torch.Tensor:
    return (x - xhat).pow(2).sum(-1).mean()


def _l1_loss(cc: Crosscoder, xb, lam: float, ops: Ops, cfg: TrainConfig, stats: dict):
    f = torch.relu(cc.preacts(xb))
    dn = cc.decoder_norms()
    active = f.detach() > 0
    fired = active.any(0)
    sparse = None
    if ops.backend == "triton":
        width = int(active.sum(1).max())
        if width <= cfg.sparse_decode_frac * cc.n:
            idx = R.dense_to_sparse(f.detach())
            vals = f.gather(1, idx.clamp(min=0)) * (idx >= 0)
            sparse = ops.decode(cc, idx, vals)
    xhat = sparse if sparse is not None else cc.decode(f)
    mse = [_mse(x, xh) for x, xh in zip(xb, xhat)]
    penalty = (f * dn).sum(-1).mean()
    if cfg.log_every:
        stats.update(mse_a=float(mse[0]), mse_b=float(mse[1]), l0=float(active.sum(1).float().mean()),
                     penalty=float(penalty), lam=lam)
    return sum(mse) + lam * penalty, fired


def _batchtopk_loss(cc: Crosscoder, xb, cfg: TrainConfig, ops: Ops, dead, aux_k: int, step: int, stats: dict):
    bsz = xb[0].shape[0]
    dn = ops.dnorm(cc)
    s = ops.scores(cc, xb, dn)
    prefilter = float(cc.threshold) * 0.5 if torch.isfinite(cc.threshold) else None
    idx = R.batch_topk(s, cfg.k * bsz, prefilter=prefilter)
    vals = ops.values(cc, xb, s, dn, idx)
    xhat = ops.decode(cc, idx, vals)
    mse = [_mse(x, xh) for x, xh in zip(xb, xhat)]
    loss = sum(mse)
    present = idx >= 0
    fired = torch.zeros(cc.n, dtype=torch.bool, device=s.device)
    fired[idx[present]] = True
    with torch.no_grad():  # running estimate of the smallest kept score -> inference threshold
        kept = s.gather(1, idx.clamp(min=0))[present]
        if step >= int(cfg.threshold_start_frac * cfg.steps) and kept.numel():
            m = float(kept.min())
            th = float(cc.threshold)
            cc.threshold.fill_(m if not math.isfinite(th) else cfg.threshold_beta * th + (1 - cfg.threshold_beta) * m)
    aux = None
    if dead is not None and bool(dead.any()) and cfg.aux_coeff > 0:
        dead_ids = dead.nonzero().squeeze(1)
        local = R.row_topk(s.index_select(1, dead_ids), min(aux_k, dead_ids.numel()))
        idx_aux = torch.where(local >= 0, dead_ids[local.clamp(min=0)], torch.full_like(local, -1))
        if bool((idx_aux >= 0).any()):
            vals_aux = ops.values(cc, xb, s, dn, idx_aux)
            ehat = ops.decode(cc, idx_aux, vals_aux, bias=False)
            aux = 0.0
            for x, xh, eh in zip(xb, xhat, ehat):
                e = (x - xh).detach()
                aux = aux + _mse(e, eh) / (e - e.mean(0)).pow(2).sum(-1).mean().clamp(min=1e-8)
            loss = loss + cfg.aux_coeff * aux
    if cfg.log_every:
        stats.update(mse_a=float(mse[0]), mse_b=float(mse[1]), width=float(idx.shape[1]),
                     dead=float(dead.float().mean()) if dead is not None else 0.0,
                     aux=float(aux) if aux is not None else 0.0, threshold=float(cc.threshold))
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
