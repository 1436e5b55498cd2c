"""Latent Scaling (Minder, Dumas et al. 2025): is a one-sided latent really absent from the other model?"""

from __future__ import annotations

from typing import Sequence

import torch

from .evaluate import iter_chunks
from .module import Crosscoder


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
        xhat = cc.decode_code(f)
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
