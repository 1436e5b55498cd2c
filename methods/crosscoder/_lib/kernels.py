"""Triton kernels for the crosscoder's sparse paths, wrapped as autograd Functions.

Same conventions as `reference.py`: model m owns latents [lo_m, hi_m); a sparse code is a
`SparseCode` (entries j = (rows[j], cols[j]) in CSR order, row_ptr [B+1]) with values [nnz]; a
per-row top-k code idx/vals [B, k] is the special case `SparseCode.from_padded` (no copy). Kernels:

* `_sparse_decode_fwd`   x_hat_m[b] = sum_{j in row b} v_j W_dec_m[cols_j - lo_m] (+ b_m): one program
                          per (row, D-tile), a gather-reduce of decoder rows, never building the
                          dense [B, n] code.
* `_sparse_decode_bwd_v`  dL/dv_j = sum_m <dL/dx_hat_m[rows_j], W_dec_m[cols_j - lo_m]>.
* `_bucket_reduce_rows`   out[i - lo] = sum_{j: cols_j = i} c_j * vec[rows_j]: row-sparse weight gradients
                          bucketed by latent (decoder rows: c = v, vec = dL/dx_hat; encoder rows:
                          c = dL/dz, vec = x). The code's entries are sorted by latent once (cached on
                          the code, shared by both models and both gradients); one program per
                          (latent row, D-tile) reduces its bucket and writes the row once: no atomics,
                          so no contention on busy latents.
* `_scatter_outer`        the same by fp32 atomics straight from the entries (`scatter_outer(...,
                          method="atomic")`; no sort, slower on an H100 at k*B = 262k entries).
* `_row_norms_acc`        sum_m ||d_i^m||, each model's launch covering its own rows only.
* `_encode_scaled_relu`   fused encoder for a model pair: tiled GEMM (tl.dot) over both models'
                          activations + bias + ReLU + decoder-norm scaling, writing the BatchTopK
                          selection score s = relu(z) * sum_m ||d^m||. The batch-level top-k over s
                          is then torch.topk (a global selection; see `reference.batch_topk`).

Importing this module imports triton. The crosscoder modules import it only when the Triton path
is used (`diffbench.methods.load_all_methods()` does import every module), so TRITON_INTERPRET=1
can usually still be set before triton's first import (the interpreter is chosen when a kernel is
decorated); the kernel tests rerun themselves in a fresh process when it cannot.

DFC partitions are not masks: an index outside a model's range is never loaded (masked-off
lanes), and in the fused encoder a latent tile that lies outside a model's range skips that
model's whole K-loop (a runtime branch per tile). Interpreted (TRITON_INTERPRET=1) the kernels
run on CPU tensors, which is how the tests check them against the torch reference; on CUDA the
tests also run them compiled (`tests/test_crosscoder_kernels.py`). Launch configurations on CUDA
(`CUDA_CFG`) were picked by a sweep on an H100 (d = 576, 32k latents, k = 64, batch 4096).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from .reference import SparseCode

try:  # triton is a dependency, but keep the torch path importable without it
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except Exception:  # pragma: no cover - exercised only where triton is missing
    triton = None
    tl = None
    HAVE_TRITON = False

Range = tuple[int, int]


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(device: torch.device | str) -> bool:
    """Can the Triton path run on tensors of this device?"""
    if not HAVE_TRITON:
        return False
    device = torch.device(device)
    return device.type == "cuda" or (interpreted() and device.type == "cpu")


def _np2(x: int, lo: int = 16, hi: int = 1 << 30) -> int:
    return max(lo, min(hi, 1 << max(0, int(x) - 1).bit_length()))


if HAVE_TRITON:

    @triton.jit
    def _sparse_decode_fwd(row_ptr, cols_ptr, val_ptr, w_ptr, bias_ptr, out_ptr, D, lo, hi,
                           stride_wn, stride_ob,
                           HAS_BIAS: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
        b = tl.program_id(0)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        start = tl.load(row_ptr + b)
        end = tl.load(row_ptr + b + 1)
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for j0 in range(start, end, BLOCK_J):
            offs_j = j0 + tl.arange(0, BLOCK_J)
            jmask = offs_j < end
            ids = tl.load(cols_ptr + offs_j, mask=jmask, other=-1)
            v = tl.load(val_ptr + offs_j, mask=jmask, other=0.0).to(tl.float32)
            ok = jmask & (ids >= lo) & (ids < hi)
            rows = tl.where(ok, ids - lo, 0)
            w = tl.load(w_ptr + rows[:, None] * stride_wn + offs_d[None, :],
                        mask=ok[:, None] & dmask[None, :], other=0.0).to(tl.float32)
            acc += tl.sum(w * v[:, None], axis=0)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_d, mask=dmask, other=0.0).to(tl.float32)
        tl.store(out_ptr + b * stride_ob + offs_d, acc, mask=dmask)

    @triton.jit
    def _sparse_decode_bwd_v(rows_ptr, cols_ptr, gout_ptr, w_ptr, gval_ptr, NNZ, D, lo, hi,
                             stride_gb, stride_wn,
                             ACCUMULATE: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
        offs_j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
        jmask = offs_j < NNZ
        ids = tl.load(cols_ptr + offs_j, mask=jmask, other=-1)
        tok = tl.load(rows_ptr + offs_j, mask=jmask, other=0)
        ok = jmask & (ids >= lo) & (ids < hi)
        rows = tl.where(ok, ids - lo, 0)
        acc = tl.zeros([BLOCK_J], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            m2 = ok[:, None] & (offs_d < D)[None, :]
            g = tl.load(gout_ptr + tok[:, None] * stride_gb + offs_d[None, :], mask=m2, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + rows[:, None] * stride_wn + offs_d[None, :], mask=m2, other=0.0).to(tl.float32)
            acc += tl.sum(w * g, axis=1)
        if ACCUMULATE:
            acc += tl.load(gval_ptr + offs_j, mask=jmask, other=0.0)
        tl.store(gval_ptr + offs_j, acc, mask=jmask)

    @triton.jit
    def _scatter_outer(rows_ptr, cols_ptr, coef_ptr, vec_ptr, out_ptr, NNZ, D, lo, hi,
                       stride_vb, stride_on,
                       BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
        offs_j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        jmask = offs_j < NNZ
        dmask = offs_d < D
        ids = tl.load(cols_ptr + offs_j, mask=jmask, other=-1)
        tok = tl.load(rows_ptr + offs_j, mask=jmask, other=0)
        c = tl.load(coef_ptr + offs_j, mask=jmask, other=0.0).to(tl.float32)
        ok = jmask & (ids >= lo) & (ids < hi) & (c != 0.0)
        rows = tl.where(ok, ids - lo, 0)
        m2 = ok[:, None] & dmask[None, :]
        vec = tl.load(vec_ptr + tok[:, None] * stride_vb + offs_d[None, :], mask=m2, other=0.0).to(tl.float32)
        tl.atomic_add(out_ptr + rows[:, None] * stride_on + offs_d[None, :], c[:, None] * vec, mask=m2, sem="relaxed")

    @triton.jit
    def _bucket_reduce_rows(ptr_ptr, perm_ptr, rows_ptr, coef_ptr, vec_ptr, out_ptr, D,
                            stride_vb, stride_on,
                            BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
        # one program per (latent row r, D-tile): out[r] = sum_{j in bucket r} coef[perm_j] * vec[rows_j]
        r = tl.program_id(0)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        start = tl.load(ptr_ptr + r)
        end = tl.load(ptr_ptr + r + 1)
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for j0 in range(start, end, BLOCK_J):
            offs_j = j0 + tl.arange(0, BLOCK_J)
            jmask = offs_j < end
            p = tl.load(perm_ptr + offs_j, mask=jmask, other=0)
            tok = tl.load(rows_ptr + offs_j, mask=jmask, other=0)
            c = tl.load(coef_ptr + p, mask=jmask, other=0.0).to(tl.float32)
            v = tl.load(vec_ptr + tok[:, None] * stride_vb + offs_d[None, :],
                        mask=jmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)
            acc += tl.sum(v * c[:, None], axis=0)
        tl.store(out_ptr + r * stride_on + offs_d, acc, mask=dmask)

    @triton.jit
    def _row_norms_acc(w_ptr, out_ptr, N, D, lo, stride_wn, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = offs_n < N
        acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            w = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_d[None, :],
                        mask=nmask[:, None] & (offs_d < D)[None, :], other=0.0).to(tl.float32)
            acc += tl.sum(w * w, axis=1)
        prev = tl.load(out_ptr + lo + offs_n, mask=nmask, other=0.0)
        tl.store(out_ptr + lo + offs_n, prev + tl.sqrt(acc), mask=nmask)

    @triton.jit
    def _encode_scaled_relu(xa_ptr, wa_ptr, xb_ptr, wb_ptr, benc_ptr, dnorm_ptr, s_ptr,
                            B, N, DA, DB, lo_a, hi_a, lo_b, hi_b,
                            stride_xa, stride_wa, stride_xb, stride_wb, stride_s,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            PRECISION: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        n0 = pid_n * BLOCK_N
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mmask = offs_m < B
        nmask = offs_n < N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        if (n0 < hi_a) & (n0 + BLOCK_N > lo_a):  # tile touches model A's latents; else A is skipped
            ok = nmask & (offs_n >= lo_a) & (offs_n < hi_a)
            rows = tl.where(ok, offs_n - lo_a, 0)
            for k0 in range(0, DA, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                kmask = offs_k < DA
                x = tl.load(xa_ptr + offs_m[:, None] * stride_xa + offs_k[None, :],
                            mask=mmask[:, None] & kmask[None, :], other=0.0)
                w = tl.load(wa_ptr + rows[None, :] * stride_wa + offs_k[:, None],
                            mask=ok[None, :] & kmask[:, None], other=0.0)
                acc = tl.dot(x, w, acc, input_precision=PRECISION)
        if (n0 < hi_b) & (n0 + BLOCK_N > lo_b):  # likewise for model B
            ok = nmask & (offs_n >= lo_b) & (offs_n < hi_b)
            rows = tl.where(ok, offs_n - lo_b, 0)
            for k0 in range(0, DB, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                kmask = offs_k < DB
                x = tl.load(xb_ptr + offs_m[:, None] * stride_xb + offs_k[None, :],
                            mask=mmask[:, None] & kmask[None, :], other=0.0)
                w = tl.load(wb_ptr + rows[None, :] * stride_wb + offs_k[:, None],
                            mask=ok[None, :] & kmask[:, None], other=0.0)
                acc = tl.dot(x, w, acc, input_precision=PRECISION)
        bias = tl.load(benc_ptr + offs_n, mask=nmask, other=0.0).to(tl.float32)
        dn = tl.load(dnorm_ptr + offs_n, mask=nmask, other=0.0).to(tl.float32)
        s = tl.maximum(acc + bias[None, :], 0.0) * dn[None, :]
        tl.store(s_ptr + offs_m[:, None] * stride_s + offs_n[None, :], s, mask=mmask[:, None] & nmask[None, :])


# ----------------------------------------------------------------------------- launchers


def _check():
    if not HAVE_TRITON:
        raise RuntimeError("the Triton backend needs the `triton` package")


def _bd(d: int, cap: int = 128) -> int:
    return _np2(min(d, cap), lo=16)


BLOCK_J = 32  # entries per chunk (interpreter / default)

# Launch configurations on CUDA, per kernel: (BLOCK_J, BLOCK_D cap, num_warps) for the sparse
# kernels, (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) for the fused encoder. Under the
# interpreter the defaults above are used. Measured on an H100 (scripts/bench_crosscoder.py).
CUDA_CFG: dict[str, tuple[int, ...]] = {
    "decode_fwd": (32, 64, 2),
    "decode_bwd_v": (16, 32, 1),
    "bucket": (8, 1024, 4),  # one program per latent row, the whole (d <= 1024) row at once
    "scatter_atomic": (32, 128, 4),
    "encode": (128, 256, 32, 8, 3),
}
# the fused encoder's tl.dot precision on CUDA: "tf32" (default; ~1e-3 relative error, like
# torch with allow_tf32) or "ieee" (exact fp32, ~3x slower). The interpreter always uses ieee.
ENCODER_PRECISION = "tf32"
# decoder/encoder row gradients: "bucket" (entries sorted by latent, one program per latent row,
# no atomics) or "atomic" (fp32 atomics straight from the entries)
ROW_GRAD = "bucket"


def _cfg(name: str, d: int, on_cuda: bool) -> tuple[int, int, dict]:
    if not on_cuda or interpreted():
        return BLOCK_J, _bd(d), {}
    bj, cap, warps = CUDA_CFG[name]
    return bj, _bd(d, cap), {"num_warps": warps}


def sparse_decode_fwd(code: SparseCode, vals: torch.Tensor, w: torch.Tensor, lo: int, hi: int,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    _check()
    d = w.shape[1]
    out = torch.empty(code.batch, d, dtype=torch.float32, device=w.device)
    bj, bd, kw = _cfg("decode_fwd", d, w.is_cuda)
    _sparse_decode_fwd[(code.batch, triton.cdiv(d, bd))](
        code.row_ptr, code.cols, vals, w, bias if bias is not None else w, out, d, lo, hi,
        w.stride(0), out.stride(0), HAS_BIAS=bias is not None, BLOCK_J=bj, BLOCK_D=bd, **kw,
    )
    return out


def sparse_decode_bwd_vals(code: SparseCode, grad_out: torch.Tensor, w: torch.Tensor, lo: int, hi: int,
                           into: torch.Tensor | None = None) -> torch.Tensor:
    _check()
    nnz, d = code.nnz, w.shape[1]
    gv = into if into is not None else torch.empty(nnz, dtype=torch.float32, device=w.device)
    if nnz:
        bj, bd, kw = _cfg("decode_bwd_v", d, w.is_cuda)
        _sparse_decode_bwd_v[(triton.cdiv(nnz, bj),)](
            code.rows, code.cols, grad_out, w, gv, nnz, d, lo, hi, grad_out.stride(0), w.stride(0),
            ACCUMULATE=into is not None, BLOCK_J=bj, BLOCK_D=bd, **kw,
        )
    return gv


def latent_buckets(code: SparseCode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The code's entries bucketed by latent: (sorted latent ids, perm, rows[perm]), cached on the code.

    Entry perm[t] is the t-th in latent order; padding (-1) sorts first and falls in no bucket.
    """
    cached = getattr(code, "_buckets", None)
    if cached is None:
        sorted_cols, perm = torch.sort(code.cols.to(torch.int32))  # 32-bit keys: half the radix passes
        cached = (sorted_cols, perm, code.rows[perm].contiguous())
        code._buckets = cached  # SparseCode is a plain dataclass; one sort serves every model and both grads
        code._bucket_ptrs = {}
    return cached


def scatter_outer(code: SparseCode, coef: torch.Tensor, vec: torch.Tensor, n_rows: int, lo: int, hi: int,
                  method: str | None = None) -> torch.Tensor:
    """out [n_rows, d] fp32 with out[cols[j] - lo] += coef[j] * vec[rows[j]] (other models' latents skipped).

    "bucket" (default): entries sorted by latent once per code, then one program per (latent row,
    D-tile) reduces its bucket and writes the row once (no atomics, no contention on busy latents).
    "atomic": one program per block of entries, fp32 atomics into the rows.
    """
    _check()
    method = method or ROW_GRAD
    nnz, d = code.nnz, vec.shape[1]
    if method == "atomic" or not nnz:
        out = torch.zeros(n_rows, d, dtype=torch.float32, device=vec.device)
        if nnz:
            bj, bd, kw = _cfg("scatter_atomic", d, vec.is_cuda)
            _scatter_outer[(triton.cdiv(nnz, bj), triton.cdiv(d, bd))](
                code.rows, code.cols, coef, vec, out, nnz, d, lo, hi, vec.stride(0), out.stride(0),
                BLOCK_J=bj, BLOCK_D=bd, **kw,
            )
        return out
    if method != "bucket":
        raise ValueError(f"unknown row-gradient method {method!r}")
    sorted_cols, perm, rows_sorted = latent_buckets(code)
    ptrs = code.__dict__.setdefault("_bucket_ptrs", {})  # per (lo, n_rows): decoder and encoder grads share it
    ptr = ptrs.get((lo, n_rows))
    if ptr is None:
        bounds = torch.arange(lo, lo + n_rows + 1, device=sorted_cols.device, dtype=sorted_cols.dtype)
        ptr = ptrs[(lo, n_rows)] = torch.searchsorted(sorted_cols, bounds)  # bucket of local row r: ptr[r]:ptr[r+1]
    out = torch.empty(n_rows, d, dtype=torch.float32, device=vec.device)
    bj, bd, kw = _cfg("bucket", d, vec.is_cuda)
    _bucket_reduce_rows[(n_rows, triton.cdiv(d, bd))](
        ptr, perm, rows_sorted, coef, vec, out, d, vec.stride(0), out.stride(0), BLOCK_J=bj, BLOCK_D=bd, **kw,
    )
    return out


def decoder_norms(w_decs: Sequence[torch.Tensor], ranges: Sequence[Range], n: int) -> torch.Tensor:
    """sum_m ||d_i^m|| -> [n] fp32 (no autograd; used for selection)."""
    _check()
    out = torch.zeros(n, dtype=torch.float32, device=w_decs[0].device)
    for w, (lo, hi) in zip(w_decs, ranges):
        w = w.detach().contiguous()
        rows, d = w.shape
        bn, bd = 32, _np2(min(d, 128))
        _row_norms_acc[(triton.cdiv(rows, bn),)](w, out, rows, d, lo, w.stride(0), BLOCK_N=bn, BLOCK_D=bd)
    return out


def encode_scores(xs: Sequence[torch.Tensor], w_encs: Sequence[torch.Tensor], b_enc: torch.Tensor,
                  dnorm: torch.Tensor, ranges: Sequence[Range], *, precision: str | None = None,
                  block_m: int | None = None, block_n: int | None = None, block_k: int | None = None,
                  num_warps: int | None = None, num_stages: int | None = None) -> torch.Tensor:
    """Fused s = relu(b_enc + sum_m x_m W_enc_m^T) * dnorm for a model pair -> [B, n] fp32 (no autograd)."""
    _check()
    if len(xs) != 2:
        raise ValueError("the fused encoder kernel takes exactly two models")
    xa, xb = (x.detach().contiguous() for x in xs)
    wa, wb = (w.detach().contiguous() for w in w_encs)
    if xa.dtype != wa.dtype or xb.dtype != wb.dtype:
        raise TypeError("activations and encoder weights must share a dtype")
    bsz, n = xa.shape[0], b_enc.shape[0]
    s = torch.empty(bsz, n, dtype=torch.float32, device=xa.device)
    (lo_a, hi_a), (lo_b, hi_b) = ranges
    kw = {}
    precision = precision or ENCODER_PRECISION
    if interpreted() or not xa.is_cuda:
        precision = "ieee"
        block_m, block_n, block_k = block_m or 64, block_n or 64, block_k or 32
    else:
        cm, cn, ck, cw, cs = CUDA_CFG["encode"]
        block_m, block_n, block_k = block_m or cm, block_n or cn, block_k or ck
        kw = {"num_warps": num_warps or cw, "num_stages": num_stages or cs}
    grid = (triton.cdiv(bsz, block_m), triton.cdiv(n, block_n))
    _encode_scaled_relu[grid](
        xa, wa, xb, wb, b_enc.detach().contiguous(), dnorm.contiguous(), s,
        bsz, n, xa.shape[1], xb.shape[1], lo_a, hi_a, lo_b, hi_b,
        xa.stride(0), wa.stride(0), xb.stride(0), wb.stride(0), s.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PRECISION=precision, **kw,
    )
    return s


# ----------------------------------------------------------------------------- autograd


class SparseDecode(torch.autograd.Function):
    """x_hat_m for every model from a sparse code; grads for the values, decoders and biases.

    apply(code, vals [nnz], ranges, n_models, W_0, ..., W_{M-1}, b_0, ..., b_{M-1}) -> M outputs
    (biases may be None).
    """

    @staticmethod
    def forward(ctx, code, vals, ranges, n_models, *wb):
        ws, bs = wb[:n_models], wb[n_models:]
        vals_c = vals.detach().float().contiguous()
        outs = [sparse_decode_fwd(code, vals_c, w.detach().contiguous(), lo, hi, None if b is None else b.detach())
                for w, b, (lo, hi) in zip(ws, bs, ranges)]
        ctx.save_for_backward(vals_c, *ws)
        ctx.code, ctx.ranges, ctx.n_models = code, ranges, n_models
        ctx.has_bias = [b is not None for b in bs]
        return tuple(o.to(vals.dtype) for o in outs)

    @staticmethod
    def backward(ctx, *grads):
        vals, *ws = ctx.saved_tensors
        code = ctx.code
        gvals = None
        gws, gbs = [], []
        for m, (w, (lo, hi), g) in enumerate(zip(ws, ctx.ranges, grads)):
            if g is None:
                gws.append(None)
                gbs.append(None)
                continue
            g = g.float().contiguous()
            wc = w.detach().contiguous()
            if ctx.needs_input_grad[1]:
                gvals = sparse_decode_bwd_vals(code, g, wc, lo, hi, into=gvals)
            gws.append(scatter_outer(code, vals, g, w.shape[0], lo, hi).to(w.dtype)
                       if ctx.needs_input_grad[4 + m] else None)
            gbs.append(g.sum(0) if ctx.has_bias[m] else None)
        if gvals is None and ctx.needs_input_grad[1]:
            gvals = torch.zeros_like(vals)
        return (None, gvals, None, None, *gws, *gbs)


class SparseEncodeValues(torch.autograd.Function):
    """vals[j] = relu(z[rows[j], cols[j]]) read from the fused kernel's score s (= relu(z) * dnorm).

    apply(s, dnorm, code, ranges, n_models, b_enc, x_0.., W_enc_0..) -> vals [nnz].
    Backward is row-sparse: dL/dW_enc_m[i - lo_m] += sum_{j: cols[j] = i} dL/dz_j x_m[rows[j]]
    (atomics), dL/db_enc likewise; the activations get no gradient.
    """

    @staticmethod
    def forward(ctx, s, dnorm, code, ranges, n_models, b_enc, *xw):
        xs, ws = xw[:n_models], xw[n_models:]
        ok = code.cols >= 0
        safe = code.cols.clamp(min=0)
        den = dnorm[safe]
        zero = torch.zeros((), device=s.device)
        vals = torch.where(ok & (den > 0), s[code.rows, safe] / den.clamp(min=1e-30), zero)
        ctx.save_for_backward(vals, *xs)
        ctx.code, ctx.ranges, ctx.n_models, ctx.n = code, ranges, n_models, b_enc.shape[0]
        ctx.w_shapes = [(w.shape[0], w.dtype) for w in ws]
        return vals

    @staticmethod
    def backward(ctx, gvals):
        vals, *xs = ctx.saved_tensors
        code = ctx.code
        gpre = (gvals * (vals > 0)).float().contiguous()
        ok = code.cols >= 0
        gb = torch.zeros(ctx.n, dtype=torch.float32, device=gvals.device)
        gb.index_add_(0, code.cols[ok], gpre[ok])
        gws = []
        for m, (x, (lo, hi)) in enumerate(zip(xs, ctx.ranges)):
            rows, dtype = ctx.w_shapes[m]
            gws.append(scatter_outer(code, gpre, x.detach().float().contiguous(), rows, lo, hi).to(dtype)
                       if ctx.needs_input_grad[6 + ctx.n_models + m] else None)
        return (None, None, None, None, None, gb, *([None] * ctx.n_models), *gws)


def sparse_decode(code: SparseCode, vals: torch.Tensor, w_decs: Sequence[torch.Tensor], ranges: Sequence[Range],
                  biases: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    biases = list(biases) if biases is not None else [None] * len(w_decs)
    return list(SparseDecode.apply(code, vals, tuple(ranges), len(w_decs), *w_decs, *biases))


def sparse_decode_padded(idx: torch.Tensor, vals: torch.Tensor, w_decs: Sequence[torch.Tensor], ranges: Sequence[Range],
                         biases: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """Per-row top-k form: idx [B, k] (-1 = padding), vals [B, k]."""
    return sparse_decode(SparseCode.from_padded(idx), vals.reshape(-1), w_decs, ranges, biases)


def sparse_encode_values(s: torch.Tensor, dnorm: torch.Tensor, code: SparseCode, xs: Sequence[torch.Tensor],
                         w_encs: Sequence[torch.Tensor], b_enc: torch.Tensor, ranges: Sequence[Range]) -> torch.Tensor:
    return SparseEncodeValues.apply(s, dnorm, code, tuple(ranges), len(xs), b_enc, *xs, *w_encs)
