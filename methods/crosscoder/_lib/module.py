"""The crosscoder itself: a partitioned two-model dictionary and its training backends (torch or Triton).

One module covers the whole family (training: train.py, objectives: losses.py):

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
from typing import Sequence

import torch
import torch.nn as nn

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

    @torch.no_grad()
    def decode_code(self, f: torch.Tensor, max_density: float = 0.1) -> list[torch.Tensor]:
        """`decode(f)` for inference: a code with at most `max_density` of its entries active (BatchTopK at inference:
        ~k of n) is decoded from its nonzeros only (embedding_bag over each row's active latents; 3.7x faster than
        the dense matmul at 2,048 latents and ~48 active on this CPU), a denser one by the dense matmul. Equal up
        to float summation order."""
        nz = f.nonzero()
        if nz.shape[0] > max_density * f.numel():
            return self.decode(f)
        code = R.SparseCode.from_flat(nz[:, 0] * self.n + nz[:, 1], self.n, f.shape[0])
        return self.decode_sparse(code, f[nz[:, 0], nz[:, 1]])

    def decode_sparse(self, code: R.SparseCode, vals: torch.Tensor, bias: bool = True) -> list[torch.Tensor]:
        """x_hat_m of every model from a sparse code (the torch path; differentiable). The one place training and the
        threshold fit decode through, so a dictionary with another layout (the N-way crosscoder) trains on train.py."""
        return R.sparse_decode(code, vals, list(self.W_dec), self.ranges, list(self.b_dec) if bias else None)


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
        if self.backend == "triton":
            return _kernels().sparse_decode(code, vals, list(cc.W_dec), cc.ranges, list(cc.b_dec) if bias else None)
        return cc.decode_sparse(code, vals, bias)

