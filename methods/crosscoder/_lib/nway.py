"""The N-way crosscoder: one BatchTopK dictionary over N models of one width, its latents partitioned into sections,
each owned by a subset of the models (the Dedicated Feature Crosscoder's hard partition, generalised).

A section is a contiguous latent range [lo, hi) and the tuple of members that own it: the shared section (every
member), one exclusive section per member, and one per chosen subset. Every (section, owner) pair is one *block*
with its own `[hi - lo, d]` encoder and decoder parameters; a member that does not own a section has no block
there, so no loss, auxiliary loss or optimiser state can give its latents weights for that member. Sections of
arbitrary subsets cannot all be contiguous per model (the two-model `Crosscoder`'s `ranges`), but blocks are: the
reference ops (`reference.preacts`, `sparse_decode`, `decoder_norms`) take the blocks as they take models, and a
model's reconstruction is the sum of its blocks' decodes plus its bias.

The module offers the part of `Crosscoder`'s interface that `train.train` (through `Ops`' torch path and
`losses._batchtopk_loss`), the threshold fit and `evaluate.latent_mass` use, so it trains on that loop unchanged.
The Triton path and data-initialised latents are not built for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from . import reference as R
from .evaluate import iter_chunks


@dataclass(frozen=True)
class Section:
    members: tuple[int, ...]  # sorted; all members = the shared section
    lo: int
    hi: int

    @property
    def size(self) -> int:
        return self.hi - self.lo


class NWayCrosscoder(nn.Module):
    def __init__(self, width: int, n_models: int, sections: Sequence[tuple[Sequence[int], int]], *, seed: int = 0,
                 score_norm: str = "sum"):
        """`sections`: (members, size) in latent order. Initialised like `Crosscoder`: unit-norm random decoder rows,
        encoder rows equal to them, zero biases."""
        super().__init__()
        if score_norm not in ("sum", "mean"):
            raise ValueError(f"score_norm must be sum or mean, got {score_norm!r}")
        self.score_norm = score_norm
        self.n_models, self.width = int(n_models), int(width)
        self.widths = [self.width] * self.n_models  # train.py's aux_k default reads it
        self.sections: list[Section] = []
        lo = 0
        for members, size in sections:
            ms = tuple(sorted({int(m) for m in members}))
            if not ms or ms[0] < 0 or ms[-1] >= self.n_models:
                raise ValueError(f"section members {tuple(members)} are not a non-empty subset of 0..{self.n_models - 1}")
            self.sections.append(Section(ms, lo, lo + int(size)))
            lo += int(size)
        self.block_model: list[int] = []
        self.ranges: list[tuple[int, int]] = []  # per block, as reference.py's per-model ranges
        g = torch.Generator().manual_seed(int(seed))
        encs, decs = [], []
        for s in self.sections:
            if s.size == 0:
                continue
            for m in s.members:
                w = torch.randn(s.size, self.width, generator=g)
                w = w / w.norm(dim=1, keepdim=True)
                decs.append(nn.Parameter(w.clone()))
                encs.append(nn.Parameter(w.clone()))
                self.block_model.append(m)
                self.ranges.append((s.lo, s.hi))
        self.W_enc = nn.ParameterList(encs)
        self.W_dec = nn.ParameterList(decs)
        self.b_enc = nn.Parameter(torch.zeros(self.n))
        self.b_dec = nn.ParameterList([nn.Parameter(torch.zeros(self.width)) for _ in range(self.n_models)])
        self.register_buffer("threshold", torch.tensor(float("nan")))

    # -- layout ----------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.sections[-1].hi if self.sections else 0

    def section_of(self, i: int) -> Section:
        return next(s for s in self.sections if s.lo <= i < s.hi)

    def blocks_of(self, m: int) -> list[int]:
        return [b for b, bm in enumerate(self.block_model) if bm == m]

    def _block_at(self, m: int, i: int) -> int | None:
        return next((b for b in self.blocks_of(m) if self.ranges[b][0] <= i < self.ranges[b][1]), None)

    def enc_row(self, m: int, i: int) -> torch.Tensor | None:
        b = self._block_at(m, i)
        return None if b is None else self.W_enc[b][i - self.ranges[b][0]]

    def dec_row(self, m: int, i: int) -> torch.Tensor | None:
        b = self._block_at(m, i)
        return None if b is None else self.W_dec[b][i - self.ranges[b][0]]

    def _dense(self, blocks: Sequence[torch.Tensor], m: int) -> torch.Tensor:
        out = torch.zeros(self.n, self.width, device=self.b_enc.device)
        for b in self.blocks_of(m):
            lo, hi = self.ranges[b]
            out[lo:hi] = blocks[b].detach()
        return out

    def dense_encoder(self, m: int) -> torch.Tensor:
        """Effective [n, d] encoder of model m (zeros where m owns no weights)."""
        return self._dense(list(self.W_enc), m)

    def dense_decoder(self, m: int) -> torch.Tensor:
        return self._dense(list(self.W_dec), m)

    # -- forward pieces --------------------------------------------------------------
    def owners(self) -> torch.Tensor:
        """How many models own each latent -> [n] float."""
        out = torch.zeros(self.n, device=self.b_enc.device)
        for lo, hi in self.ranges:
            out[lo:hi] += 1
        return out

    @torch.no_grad()
    def selection_norms(self, dn: torch.Tensor | None = None) -> torch.Tensor:
        """BatchTopK score factor: sum of the owners' decoder norms ("sum") or their mean ("mean"), as `Crosscoder`."""
        dn = R.decoder_norms([w.detach() for w in self.W_dec], self.ranges, self.n) if dn is None else dn
        return dn / self.owners() if self.score_norm == "mean" else dn

    def per_model_norms(self) -> torch.Tensor:
        """||d_i^m|| -> [N, n], zero where model m does not own latent i."""
        per_block = R.per_model_norms([w.detach() for w in self.W_dec], self.ranges, self.n)
        out = torch.zeros(self.n_models, self.n, device=per_block.device)
        return out.index_add_(0, torch.tensor(self.block_model, device=per_block.device), per_block)

    def center(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Encoder input x_m - b_dec_m per model (pre-encoder bias; b_dec gets no gradient through this path)."""
        return [x - b.detach() for x, b in zip(xs, self.b_dec)]

    def preacts(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """z = b_enc + sum over blocks (x_m - b_dec_m) W_enc_block^T -> [B, n] (each section reads only its owners)."""
        xc = self.center(xs)
        return R.preacts([xc[m] for m in self.block_model], list(self.W_enc), self.b_enc, self.ranges)

    @torch.no_grad()
    def readout_bias(self) -> torch.Tensor:
        """Bias of z as an affine function of the uncentred inputs: b_enc - sum over blocks <b_dec_m, W_enc[i]>."""
        out = self.b_enc.detach().clone()
        for w, m, (lo, hi) in zip(self.W_enc, self.block_model, self.ranges):
            out[lo:hi] -= w.detach() @ self.b_dec[m].detach()
        return out

    @torch.no_grad()
    def encode(self, xs: Sequence[torch.Tensor], mode: str = "threshold") -> torch.Tensor:
        """Dense code [B, n]: "relu", or "threshold" (BatchTopK inference: f * [f * selection norm > threshold])."""
        f = torch.relu(self.preacts(xs))
        if mode == "relu":
            return f
        if mode != "threshold":
            raise ValueError(f"unknown encode mode {mode!r}")
        if not torch.isfinite(self.threshold):
            raise RuntimeError("this crosscoder has no inference threshold yet")
        return f * (f * self.selection_norms() > self.threshold)

    def decode_sparse(self, code: R.SparseCode, vals: torch.Tensor, bias: bool = True) -> list[torch.Tensor]:
        """x_hat_m = sum of model m's blocks' decodes (+ b_dec_m) for every model. Differentiable."""
        per_block = R.sparse_decode(code, vals, list(self.W_dec), self.ranges)
        outs: list[torch.Tensor | None] = [None] * self.n_models
        for m, out in zip(self.block_model, per_block):
            outs[m] = out if outs[m] is None else outs[m] + out
        zero = vals.new_zeros(code.batch, self.width)
        return [(zero if o is None else o) + (b if bias else 0) for o, b in zip(outs, self.b_dec)]


@torch.no_grad()
def evaluate_nway(cc: NWayCrosscoder, xs: Sequence[torch.Tensor], chunk: int = 4096) -> dict:
    """Explained variance per model (`ev`: a list), L0 and per-latent firing counts at inference on rows xs."""
    sse = torch.zeros(cc.n_models, dtype=torch.float64)
    fires = torch.zeros(cc.n, dtype=torch.long)
    l0 = 0.0
    for xb in iter_chunks(xs, chunk):
        f = cc.encode(xb, "threshold")
        code = R.dense_to_code(f)
        for m, (x, xh) in enumerate(zip(xb, cc.decode_sparse(code, f[code.rows, code.cols]))):
            sse[m] += float((x - xh).pow(2).sum())
        fires += (f > 0).sum(0).cpu()
        l0 += float((f > 0).sum())
    sst = torch.tensor([float((x - x.mean(0)).pow(2).sum()) for x in xs], dtype=torch.float64).clamp(min=1e-12)
    return {"ev": (1 - sse / sst).tolist(), "l0": l0 / max(1, xs[0].shape[0]), "fires": fires,
            "dead_frac": float((fires == 0).float().mean()), "n_tokens": xs[0].shape[0]}
