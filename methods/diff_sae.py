"""Difference dictionary: a BatchTopK sparse autoencoder trained on per-token h_B - h_A (Aranguri et al. 2025).

Data: the pair's audit-corpus activations at the middle layer (or `layer`), prepared as for the
crosscoders (`crosscoder/_lib/method.prepare_data`: position 0 and outlier rows dropped, 10% of texts
held out, at most `max_tokens` training rows); the per-token differences h_B - h_A in raw units are
scaled by one scalar to mean norm sqrt(d). The dictionary is a one-model BatchTopK crosscoder
(`_shared/sae.py`: the same training, auxiliary loss and inference threshold).

Findings: the `max_findings` live latents with the largest activation mass, mass_i = sum over the
training rows of f_i * ||d_i|| in raw units. Uniqueness = mass_i / (rows * mean ||h_A||): the
latent's average contribution to the difference per token, relative to model A's activation norm
(comparable across pairs); flagged when it is >= `flag_threshold` (our rule; the paper ranks
latents and sets no threshold). Readout = the latent's activation on the difference:
`Readout(w_a=-w, w_b=w, bias, act="relu", threshold)` with w the encoder row folded with the scale
(identically the constant `bias`, hence AUROC 0.5, with model B replaced by model A); direction =
the decoder row in raw units; tokens = its logit lens in model B.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..core import Finding, Method, NotApplicableError, PairContext, register_method, save_run_metrics
from .crosscoder._lib.method import DataOptions, prepare_data, subsample
from ..core.env import cpu_threads
from ._shared.sae import SAEConfig, fit_sae, latent_readout, raw_rows, sae_stats
from ..core.lens import lens

log = logging.getLogger(__name__)

@dataclass
class DiffSAEConfig(SAEConfig):
    k: int = 16
    steps: int = 150
    flag_threshold: float = 0.01  # flag when the latent's mean contribution per token >= this x mean |h_A|
    min_relative_diff: float = 1e-4


@register_method
class DiffSAE(Method):
    name = "diff_sae"
    stochastic: ClassVar[bool] = True
    Config = DiffSAEConfig
    cfg: DiffSAEConfig

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.last_metrics: dict[str, Any] = {}
        self.sae = None

    def find(self, ctx: PairContext) -> list[Finding]:
        c = self.cfg
        if ctx.model_a.hidden_size != ctx.model_b.hidden_size:
            raise NotApplicableError("a difference dictionary needs a shared activation space (equal hidden sizes)")
        torch.manual_seed(ctx.seed)
        data = prepare_data(ctx, DataOptions.of(c))
        diff_tr = raw_rows(data, 1) - raw_rows(data, 0)
        diff_ev = raw_rows(data, 1, "eval") - raw_rows(data, 0, "eval")
        act_norm = float(raw_rows(data, 0).norm(dim=1).mean())
        diff_norm = float(diff_tr.norm(dim=1).mean())
        if not math.isfinite(diff_norm) or diff_norm <= c.min_relative_diff * act_norm:
            self.last_metrics = {"relative_diff": diff_norm / max(act_norm, 1e-12), "note": "models (nearly) identical here"}
            return []  # nothing to decompose
        scale = math.sqrt(diff_tr.shape[1]) / diff_norm
        x_tr, x_ev = diff_tr * scale, diff_ev * scale
        with cpu_threads(c.threads, ctx.device) as n_threads:
            sae, res = fit_sae(x_tr, c, ctx.seed, ctx.device)
            stats = sae_stats(sae, subsample([x_tr], c.max_stat_tokens, ctx.seed)[0])
            ev = sae_stats(sae, x_ev) if x_ev.shape[0] else None
        self.sae = sae
        dn = sae.selection_norms().cpu()
        n_stat = stats.n_tokens
        mass_raw = stats.mass.double() * dn.double() / scale  # sum of f_i * ||d_i|| in raw units
        uniq = (mass_raw / max(n_stat, 1) / act_norm).float()
        alive = stats.fires > 0
        order = [int(i) for i in torch.argsort(torch.where(alive, uniq, torch.full_like(uniq, -1.0)), descending=True)
                 if alive[i]][: c.max_findings]
        metrics = {"ev_train": float(stats.ev), "ev_eval": float(ev.ev) if ev else float("nan"), "l0": float(stats.l0),
                   "dead_frac": float((~alive).float().mean()), "train_seconds": float(res.seconds), "steps": float(res.steps),
                   "train_tokens": float(x_tr.shape[0]), "relative_diff": diff_norm / act_norm, "threads": float(n_threads),
                   "layer": float(data.layer_a), "dict_size": float(sae.n)}
        self.last_metrics = metrics
        log.info("diff_sae on %s: %s", ctx.pair_id, metrics)
        out = []
        layer = data.layer_a
        directions = (sae.W_dec[0].detach().float()[order] / scale).cpu() if order else None
        lenses = lens(ctx.model_b, directions) if order else []
        for i, direction, (ids, toks) in zip(order, directions if order else [], lenses):
            u = float(uniq[i])
            out.append(Finding(
                id=f"diff_sae:L{layer}:latent{i}", uniqueness=u, flagged=u >= c.flag_threshold,
                readout=latent_readout(sae, i, scale, layer, on="diff"), side="b", direction=direction,
                direction_layer=layer, tokens=toks, token_ids=ids,
                info={**metrics, "latent": float(i), "mass_per_token": float(mass_raw[i]) / max(n_stat, 1),
                      "freq_train": float(stats.fires[i]) / max(n_stat, 1)}))
        save_run_metrics(ctx, self.name, {**metrics, "config": self.config})
        return out
