"""Plain-torch reference implementations of the crosscoder's sparse ops (the CPU default path).

Conventions shared with `kernels.py`:

* A crosscoder over M models has `n` latents. Model m owns the contiguous latent range
  `ranges[m] = (lo_m, hi_m)`; its encoder and decoder are `[hi_m - lo_m, d_m]` matrices whose
  row `i - lo_m` belongs to latent `i`. Latents outside a model's range have no weights for that
  model at all (this is how the Dedicated Feature Crosscoder's exclusive sections are built:
  latents are ordered A-exclusive | shared | B-exclusive, so A owns [0, n_A + n_S) and B owns
  [n_A, n)). Plain crosscoders give every model the full range [0, n).
* Sparse codes are padded index/value pairs `idx [B, K]` (int64, -1 = padding) and
  `vals [B, K]`. Every op skips an index outside a model's range (and so every padding entry).
"""

from __future__ import annotations

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


def batch_topk(s: torch.Tensor, k_total: int, prefilter: float | None = None) -> torch.Tensor:
    """Indices of the `k_total` largest positive entries of s [B, n] over the whole batch.

    Returns padded per-row indices [B, K'] (K' = most entries any row kept; -1 = padding).
    `prefilter`: a value believed to be below the k_total-th largest score; the exact top-k is
    taken over the entries above it when there are at least k_total of them (a cheap exact
    shortcut), and over everything otherwise.
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
    keep = top_v > 0
    top_i = top_i[keep]
    return _pad_rows(top_i // n, top_i % n, bsz)


def _pad_rows(rows: torch.Tensor, cols: torch.Tensor, bsz: int) -> torch.Tensor:
    if rows.numel() == 0:
        return torch.full((bsz, 1), -1, dtype=torch.long, device=rows.device)
    order = torch.argsort(rows * (cols.max() + 1) + cols)  # by row, then latent (deterministic)
    rows, cols = rows[order], cols[order]
    counts = torch.bincount(rows, minlength=bsz)
    width = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(rows.numel(), device=rows.device) - starts[rows]
    idx = torch.full((bsz, width), -1, dtype=torch.long, device=rows.device)
    idx[rows, slot] = cols
    return idx


def row_topk(s: torch.Tensor, k: int) -> torch.Tensor:
    """Per-row top-k of s [B, n] -> idx [B, k] with -1 where the score is not positive."""
    k = max(1, min(int(k), s.shape[1]))
    v, i = s.topk(k, dim=1)
    return torch.where(v > 0, i, torch.full_like(i, -1))


def dense_to_sparse(f: torch.Tensor) -> torch.Tensor:
    """Padded indices of the nonzero entries of a dense code f [B, n] (-1 = padding)."""
    rows, cols = f.nonzero(as_tuple=True)
    return _pad_rows(rows, cols, f.shape[0])


def _local(idx: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    valid = (idx >= lo) & (idx < hi)
    return torch.where(valid, idx - lo, torch.zeros_like(idx)), valid


def sparse_encode_values(xs: Sequence[torch.Tensor], w_encs: Sequence[torch.Tensor], b_enc: torch.Tensor,
                         idx: torch.Tensor, ranges: Sequence[Range]) -> torch.Tensor:
    """vals[b, j] = relu(b_enc[i] + sum_{m owns i} <x_m[b], W_enc_m[i - lo_m]>), i = idx[b, j]; 0 for padding.

    Recomputes the selected pre-activations from gathered encoder rows, so autograd gives
    sparse gradients (only the selected rows of W_enc and entries of b_enc).
    """
    present = idx >= 0
    pre = b_enc[idx.clamp(min=0)]
    for x, w, (lo, hi) in zip(xs, w_encs, ranges):
        local, valid = _local(idx, lo, hi)
        rows = F.embedding(local, w)  # [B, K, d]
        dots = torch.bmm(rows, x.unsqueeze(2)).squeeze(2)
        pre = pre + dots * valid
    return torch.relu(pre) * present


def sparse_decode(idx: torch.Tensor, vals: torch.Tensor, w_decs: Sequence[torch.Tensor], ranges: Sequence[Range],
                  biases: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """x_hat_m[b] = sum_j vals[b, j] * W_dec_m[idx[b, j] - lo_m] (+ b_m), indices outside m's range skipped.

    Never builds the dense [B, n] code. Differentiable in vals, the decoders and the biases.
    """
    outs = []
    for m, (w, (lo, hi)) in enumerate(zip(w_decs, ranges)):
        local, valid = _local(idx, lo, hi)
        out = F.embedding_bag(local, w, per_sample_weights=vals * valid, mode="sum")
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


def sparse_to_dense(idx: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(idx.shape[0], n, dtype=vals.dtype, device=vals.device)
    present = idx >= 0
    return out.scatter_add(1, idx.clamp(min=0), vals * present)
