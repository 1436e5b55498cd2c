"""Held-out metrics of a trained crosscoder (explained variance, L0, dead latents) and latent codes / mass."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .module import Crosscoder


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
        xhat = cc.decode_code(f)
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


