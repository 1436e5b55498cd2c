"""Base-dictionary drift (stage-wise model diffing, Bricken et al. 2024).

A BatchTopK sparse autoencoder (a one-model crosscoder, `crosscoder.sae`) is trained on model A's
activations at the middle layer (or `layer`), then fine-tuned briefly (`finetune_steps` at
`finetune_lr`; `finetune: all` trains every weight as in the paper, `decoder` only the decoder) on
model B's activations at the same layer. Data as for the crosscoders
(`crosscoder/_lib/method.prepare_data`); both models' rows are scaled by model A's scalar, so a change
of scale in B shows up as drift. The A-stage dictionary depends only on model A's activations, the
configuration and the seed; with a `work_dir` it is cached there (`dict_drift-A-<key>.pt`) and
reused by every pair with the same model A.

Control (`control: true`, our addition): a second copy gets the identical fine-tuning (same seed,
hence the same batches of the same token rows) on model A's own rows; drift is measured between
the two fine-tuned decoders, so what merely continued training moves (measured: rare latents of
a short A-stage run moved more than the planted one) cancels. With model B = model A the two runs
are identical and every drift is exactly 0.

Findings: latents that fire on at least `min_fires` of model B's training rows, ranked by
uniqueness = drift mass = (mean activation of the latent on B's rows) x ||d_i^B - d_i^ref|| /
(model A's mean activation norm): how much of B's activation the latent's decoder change accounts
for per token (`rank_by: cos` ranks by 1 - cos(d_i^ref, d_i^B) instead, the paper's similarity,
which on our tests put rarely firing latents first). Flagged when the drift mass is >= `flag_mass`
(our rule; the paper inspects the lowest-similarity features). `info` has both cosines (to the
control and to the A-stage decoder). Readout = the per-token difference h_B - h_A projected on the
unit drift (d_i^B - d_i^ref): how far B's activation moved along the direction the latent had to
move to keep reconstructing B (0 with model B replaced by model A). Direction = the drift in raw
units; tokens = its logit lens in B.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import torch

from ..core.io import stable_hash
from ..core import Finding, Method, NotApplicableError, PairContext, register_method, save_run_metrics
from ..core.env import cpu_threads
from .crosscoder._lib.method import DataOptions, prepare_data, subsample
from .crosscoder._lib.module import Crosscoder
from ._shared.sae import SAEConfig, fit_sae, sae_stats
from ..core.lens import lens
from ._shared.difference import difference_readout

log = logging.getLogger(__name__)


@dataclass
class DictDriftConfig(SAEConfig):
    steps: int = 200  # A stage (cached per model A in the findings folder)
    finetune_steps: int = 60  # B stage (and the same again on A's rows for the control)
    finetune_lr: float = 1e-3
    finetune: Literal["all", "decoder"] = "all"  # decoder: train only the decoder in the B stage
    control: bool = True  # measure drift against the same fine-tuning on model A's rows
    rank_by: Literal["mass", "cos"] = "mass"  # mass (mean activation x decoder drift) | cos (1 - decoder cosine)
    min_fires: int = 4  # a latent must fire on this many of B's rows
    flag_mass: float = 0.005  # flag when drift mass >= this (fraction of mean |h_A| per token)
    cache: bool = True  # keep the A-stage dictionary per model A in the work folder


@register_method
class DictDrift(Method):
    name = "dict_drift"
    stochastic: ClassVar[bool] = True
    Config = DictDriftConfig
    cfg: DictDriftConfig

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.last_metrics: dict[str, Any] = {}
        self.sae_a: Crosscoder | None = None
        self.sae_b: Crosscoder | None = None
        self.scale_a = 1.0  # raw model-A activations * scale_a = the dictionaries' input

    def _stage_a(self, ctx: PairContext, x_a: torch.Tensor, layer: int) -> tuple[Crosscoder, float, bool]:
        """(A-stage dictionary, its training seconds, whether it came from the cache)."""
        c = self.cfg
        # the cache key hashes the options the A stage depends on (by key, as recorded)
        a_keys = {k: self.config[k] for k in sorted(self.config) if k not in ("finetune_steps", "finetune_lr", "finetune", "control", "max_findings", "flag_mass", "rank_by",
                                                           "min_fires", "threads", "cache", "max_stat_tokens")}
        key = stable_hash({"store": ctx.corpus.a.root.name, "layer": layer, "seed": ctx.seed, "cfg": a_keys,
                           "rows": int(x_a.shape[0]), "v": 1})
        path = ctx.work_dir / f"dict_drift-A-{key}.pt" if (ctx.work_dir is not None and c.cache) else None
        if path is not None and path.exists():
            try:
                blob = torch.load(path, map_location=ctx.device, weights_only=True)
                sae = Crosscoder([x_a.shape[1]], n_shared=c.dict_size, seed=ctx.seed).to(ctx.device)
                sae.load_state_dict(blob)
                sae.eval()
                return sae, 0.0, True
            except Exception as e:  # a corrupt cache entry is retrained
                log.warning("dict_drift: cannot read cached A-stage dictionary %s (%s); retraining", path, e)
        sae, res = fit_sae(x_a, c, ctx.seed, ctx.device)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(sae.state_dict(), tmp)
            tmp.replace(path)
        return sae, res.seconds, False

    def find(self, ctx: PairContext) -> list[Finding]:
        c = self.cfg
        if c.rank_by not in ("mass", "cos"):
            raise ValueError(f"dict_drift: rank_by must be mass or cos, got {c.rank_by!r}")
        if ctx.model_a.hidden_size != ctx.model_b.hidden_size:
            raise NotApplicableError("dictionary drift needs a shared activation space (equal hidden sizes)")
        torch.manual_seed(ctx.seed)
        data = prepare_data(ctx, DataOptions.of(c))
        layer = data.layer_a
        s_a = data.scales[0]
        x_a = data.train[0]
        x_b = data.train[1] / data.scales[1] * s_a  # model B in model A's units
        with cpu_threads(c.threads, ctx.device) as n_threads:
            sae_a, sec_a, cached = self._stage_a(ctx, x_a, layer)
            ft = replace(c, lr=c.finetune_lr, data_init_frac=0.0)
            if c.finetune not in ("decoder", "all"):
                raise ValueError(f"dict_drift: finetune must be decoder or all, got {c.finetune!r}")
            kw = dict(init=sae_a, steps=c.finetune_steps, freeze_encoder=c.finetune == "decoder")
            sae_b, res_b = fit_sae(x_b, ft, ctx.seed + 1, ctx.device, **kw)
            # control: the same fine-tuning (same seed, hence the same batches of the same token rows) on
            # model A's rows; what moves there is continued training, not model B
            sae_c = fit_sae(x_a, ft, ctx.seed + 1, ctx.device, **kw)[0] if c.control else sae_a
            stats_a = sae_stats(sae_a, subsample([x_a], min(2048, c.max_stat_tokens), ctx.seed)[0])  # info only
            stats_b = sae_stats(sae_b, subsample([x_b], c.max_stat_tokens, ctx.seed)[0])
        self.sae_a, self.sae_b, self.scale_a = sae_a, sae_b, s_a
        dec_a, dec_b = sae_a.W_dec[0].detach().float().cpu(), sae_b.W_dec[0].detach().float().cpu()
        dec_ref = sae_c.W_dec[0].detach().float().cpu()
        cos = torch.nn.functional.cosine_similarity(dec_ref, dec_b, dim=1)
        cos_a = torch.nn.functional.cosine_similarity(dec_a, dec_b, dim=1)
        drift = dec_b - dec_ref
        alive = stats_b.fires >= c.min_fires
        # drift mass: the latent's mean activation on B's rows times how far its decoder moved, relative to
        # A's mean activation norm (sqrt(d) in these units) -- how much of B's activations the drift moves
        mean_f = stats_b.mass.double() / max(stats_b.n_tokens, 1)
        mass = (mean_f * drift.norm(dim=1).double() / math.sqrt(dec_a.shape[1])).float()
        score = mass if c.rank_by == "mass" else 1.0 - cos
        uniq = torch.where(alive, score, torch.full_like(score, -1.0))
        order = [int(i) for i in torch.argsort(uniq, descending=True) if alive[i]][: c.max_findings]
        metrics = {"ev_a": stats_a.ev, "ev_b_before": float("nan"), "ev_b": stats_b.ev, "l0_a": stats_a.l0, "l0_b": stats_b.l0,
                   "train_seconds_a": sec_a, "a_stage_cached": float(cached), "finetune_seconds": res_b.seconds,
                   "threads": float(n_threads), "layer": float(layer), "dict_size": float(sae_a.n),
                   "alive_b": float(alive.float().mean()), "median_cos": float(cos[alive].median()) if alive.any() else float("nan")}
        with torch.no_grad():
            metrics["ev_b_before"] = sae_stats(sae_a, subsample([x_b], min(2048, c.max_stat_tokens), ctx.seed)[0]).ev
        self.last_metrics = metrics
        log.info("dict_drift on %s: %s", ctx.pair_id, metrics)
        out = []
        order = [i for i in order if 0 < float(drift[i].norm()) < math.inf]
        lenses = lens(ctx.model_b, drift[order]) if order else []
        for i, (ids, toks) in zip(order, lenses):
            d = drift[i]
            unit = d / d.norm()
            direction = d / s_a  # raw units
            ci = float(cos[i])
            out.append(Finding(
                id=f"dict_drift:L{layer}:latent{i}", uniqueness=float(uniq[i]),
                flagged=float(mass[i]) >= c.flag_mass,
                readout=difference_readout(layer, unit), side="b", direction=direction, direction_layer=layer,
                tokens=toks, token_ids=ids,
                info={**metrics, "latent": float(i), "cos": ci, "cos_to_a": float(cos_a[i]), "drift_mass": float(mass[i]), "norm_a": float(dec_a[i].norm()), "norm_b": float(dec_b[i].norm()),
                      "freq_a": float(stats_a.fires[i]) / max(stats_a.n_tokens, 1),
                      "freq_b": float(stats_b.fires[i]) / max(stats_b.n_tokens, 1)}))
        save_run_metrics(ctx, self.name, {**metrics, "config": self.config})
        return out
