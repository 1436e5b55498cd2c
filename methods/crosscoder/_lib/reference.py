"""Plain-torch reference implementations of the crosscoder's sparse ops (the CPU default path).

Conventions shared with `kernels.py`:

* A crosscoder over M models has `n` latents. Model m owns the contiguous latent range
  `ranges[m] = (lo_m, hi_m)`; its encoder and decoder are `[hi_m - lo_m, d_m]` matrices whose
  row `i - lo_m` belongs to latent `i`. Latents outside a model's range have no weights for that
  model at all (this is how the Dedicated Feature Crosscoder's exclusive sections are built:
  latents are ordered A-exclusive | shared | B-exclusive, so A owns [0, n_A + n_S) and B owns
  [n_A, n)). Plain crosscoders give every model the full range [0, n).
* A sparse code is a `SparseCode`: the kept (row, latent) pairs in CSR order (sorted by row;
  `row_ptr [B+1]`), with its values a separate [nnz] tensor (the one that carries gradients).
  BatchTopK keeps a different number of latents per row, so a fixed-width [B, k] layout would
  be padded to the busiest row (often 4-8x k); per-row top-k codes ([B, k] idx/values) convert
  with `SparseCode.from_padded` at no cost. A latent index of -1 is padding. Every op skips an
  index outside a model's range (and so every padding entry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

Range = tuple[int, int]


def segments(ranges: Sequence[Range], n: int) -> list[tuple[int, int, list[int]]]:
    """Split [0, n) at every range boundary -> [(start, end, models covering it)], in order."""
    cuts = sorted({0, n, *(b for r in ranges for b in r)})
    out = []
    for s, e in zip(cuts[:-1], cuts[1:]):
        if e > s:
            out.append((s, e, [m for m, (lo, hi) in enumerate(ranges) if lo <= s and e <= hi]))
    return out


def preacts(xs: Sequence[torch.Tensor], w_encs: Sequence[torch.Tensor], b_enc: torch.Tensor,
            ranges: Sequence[Range]) -> torch.Tensor:
    """z[b, i] = b_enc[i] + sum over models m owning i of <x_m[b], W_enc_m[i - lo_m]>  -> [B, n].

    Block-structured: each latent segment only multiplies the models that own it (a DFC
    A-exclusive segment never touches model B's activations). Differentiable.
    """
    n = b_enc.shape[0]
    parts = []
    for s, e, models in segments(ranges, n):
        z = b_enc[s:e].expand(xs[0].shape[0], e - s)
        for m in models:
            lo = ranges[m][0]
            z = torch.addmm(z, xs[m], w_encs[m][s - lo : e - lo].t())
        parts.append(z)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def decoder_norms(w_decs: Sequence[torch.Tensor], ranges: Sequence[Range], n: int) -> torch.Tensor:
    """sum_m ||d_i^m|| per latent -> [n] (a model that does not own latent i contributes 0). Differentiable."""
    out = None
    for w, (lo, hi) in zip(w_decs, ranges):
        part = F.pad(w.norm(dim=1), (lo, n - hi))
        out = part if out is None else out + part
    return out


def per_model_norms(w_decs: Sequence[torch.Tensor], ranges: Sequence[Range], n: int) -> torch.Tensor:
    """||d_i^m|| -> [M, n], zero where model m does not own latent i."""
    return torch.stack([F.pad(w.norm(dim=1), (lo, n - hi)) for w, (lo, hi) in zip(w_decs, ranges)])


def scaled_relu(z: torch.Tensor, dnorm: torch.Tensor) -> torch.Tensor:
    """Selection score s = relu(z) * sum_m ||d^m||."""
    return torch.relu(z) * dnorm


@dataclass
class SparseCode:
    """Positions of a sparse [B, n] code in CSR order: entry j is (rows[j], cols[j]); -1 cols = padding."""

    rows: torch.Tensor  # [nnz] int64, non-decreasing
    cols: torch.Tensor  # [nnz] int64 latent index (or -1)
    row_ptr: torch.Tensor  # [B + 1] int64: row b's entries are row_ptr[b]:row_ptr[b+1]
    batch: int

    @property
    def nnz(self) -> int:
        return int(self.cols.numel())

    @classmethod
    def from_flat(cls, flat: torch.Tensor, n: int, batch: int) -> "SparseCode":
        """From flat indices b * n + i into a [B, n] code (any order)."""
        flat = torch.sort(flat).values
        rows = flat // n
        counts = torch.bincount(rows, minlength=batch)
        row_ptr = torch.zeros(batch + 1, dtype=torch.long, device=flat.device)
        row_ptr[1:] = torch.cumsum(counts, 0)
        return cls(rows, flat % n, row_ptr, batch)

    @classmethod
    def from_padded(cls, idx: torch.Tensor) -> "SparseCode":
        """From per-row indices idx [B, k] (-1 = padding); the values are vals.reshape(-1)."""
        batch, k = idx.shape
        dev = idx.device
        return cls(torch.arange(batch, device=dev).repeat_interleave(k), idx.reshape(-1),
                   torch.arange(batch + 1, device=dev) * k, batch)

    def width(self) -> int:
        """Most entries in any row."""
        return int((self.row_ptr[1:] - self.row_ptr[:-1]).max()) if self.batch else 0

    def to_dense(self, vals: torch.Tensor, n: int) -> torch.Tensor:
        out = torch.zeros(self.batch, n, dtype=vals.dtype, device=vals.device)
        ok = self.cols >= 0
        return out.index_put((self.rows[ok], self.cols[ok]), vals[ok], accumulate=True)


def batch_topk(s: torch.Tensor, k_total: int, prefilter: float | None = None) -> SparseCode:
    """The `k_total` largest positive entries of s [B, n] over the whole batch, as a SparseCode.

    `prefilter`: a value believed to be below the k_total-th largest score. The top-k is then taken
    over the entries above it when there are at least k_total of them (exact: every entry of the
    true top-k exceeds the k_total-th largest, hence the prefilter), else over everything.
    """
    bsz, n = s.shape
    flat = s.reshape(-1)
    k_total = min(int(k_total), flat.numel())
    if prefilter is not None and prefilter > 0:
        cand = (flat > prefilter).nonzero().squeeze(1)
        if cand.numel() >= k_total:
            top_v, pos = flat[cand].topk(k_total, sorted=False)
            top_i = cand[pos]
        else:
            top_v, top_i = flat.topk(k_total, sorted=False)
    else:
        top_v, top_i = flat.topk(k_total, sorted=False)
    return SparseCode.from_flat(top_i[top_v > 0], n, bsz)


def row_topk(s: torch.Tensor, k: int) -> torch.Tensor:
    """Per-row top-k of s [B, n] -> idx [B, k] with -1 where the score is not positive."""
    k = max(1, min(int(k), s.shape[1]))
    v, i = s.topk(k, dim=1)
    return torch.where(v > 0, i, torch.full_like(i, -1))


def dense_to_code(f: torch.Tensor) -> SparseCode:
    """The nonzero entries of a dense code f [B, n]."""
    rows, cols = f.nonzero(as_tuple=True)
    return SparseCode.from_flat(rows * f.shape[1] + cols, f.shape[1], f.shape[0])


def _local(cols: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    valid = (cols >= lo) & (cols < hi)
    return torch.where(valid, cols - lo, torch.zeros_like(cols)), valid


def sparse_encode_values(xs: Sequence[torch.Tensor], w_encs: Sequence[torch.Tensor], b_enc: torch.Tensor,
                         code: SparseCode, ranges: Sequence[Range]) -> torch.Tensor:
    """vals[j] = relu(b_enc[i] + sum_{m owns i} <x_m[b], W_enc_m[i - lo_m]>) for entry j = (b, i) -> [nnz].

    Recomputes the kept pre-activations from gathered encoder rows, so autograd gives row-sparse
    gradients (only the kept rows of W_enc and entries of b_enc).
    """
    present = code.cols >= 0
    pre = b_enc[code.cols.clamp(min=0)]
    for x, w, (lo, hi) in zip(xs, w_encs, ranges):
        local, valid = _local(code.cols, lo, hi)
        dots = (F.embedding(local, w) * x[code.rows]).sum(-1)
        pre = pre + dots * valid
    return torch.relu(pre) * present


def sparse_decode(code: SparseCode, vals: torch.Tensor, w_decs: Sequence[torch.Tensor], ranges: Sequence[Range],
                  biases: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """x_hat_m[b] = sum_{j in row b} vals[j] * W_dec_m[cols[j] - lo_m] (+ b_m), latents outside m's range skipped.

    Never builds the dense [B, n] code (embedding_bag over each row's entries). Differentiable in
    vals, the decoders and the biases.
    """
    outs = []
    offsets = code.row_ptr[:-1]
    for m, (w, (lo, hi)) in enumerate(zip(w_decs, ranges)):
        local, valid = _local(code.cols, lo, hi)
        out = F.embedding_bag(local, w, offsets, mode="sum", per_sample_weights=vals * valid)
        if biases is not None and biases[m] is not None:
            out = out + biases[m]
        outs.append(out)
    return outs


def dense_decode(f: torch.Tensor, w_decs: Sequence[torch.Tensor], ranges: Sequence[Range],
                 biases: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """x_hat_m = f[:, lo_m:hi_m] @ W_dec_m (+ b_m): the dense decode, over each model's own block only."""
    outs = []
    for m, (w, (lo, hi)) in enumerate(zip(w_decs, ranges)):
        b = biases[m] if biases is not None else None
        outs.append(torch.addmm(b, f[:, lo:hi], w) if b is not None else f[:, lo:hi] @ w)
    return outs


def sparse_decode_padded(idx: torch.Tensor, vals: torch.Tensor, w_decs: Sequence[torch.Tensor], ranges: Sequence[Range],
                         biases: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """Per-row top-k form: idx [B, k] (-1 = padding), vals [B, k]."""
    return sparse_decode(SparseCode.from_padded(idx), vals.reshape(-1), w_decs, ranges, biases)
