"""The BatchTopK crosscoder method without a registered name (`../batchtopk.py` registers it and describes it); the
base of batchtopk_crosscoder, dfc and random_dictionary."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ....core import Finding, PairContext
from .method import CrosscoderConfig, CrosscoderMethod, PairData, relative_norms, subsample
from .module import Crosscoder
from .scaling import latent_scaling

log = logging.getLogger(__name__)


@dataclass
class BatchTopKConfig(CrosscoderConfig):
    steps: int = 400
    batch_size: int = 128
    k: int = 32  # active latents per token on average (k * batch per batch)
    # lr (3e-3) is tuned at 2,048 latents; wider dictionaries train with lr * sqrt(2048 / n): at 16,384 latents on
    # 7,110 SmolLM2 rows held-out EV 0.776 vs 0.752 with 3e-3 (scripts/compare_crosscoder.py)
    lr_width: int | None = 2048
    # no data-initialised latents: a centred Gemma-3 row is mostly its one massive dimension (163: 56% of the
    # centred variance at layer 9), so 25% data init gave hundreds of shared latents whose B decoder writes
    # +-e_163; held-out rows that fire many of them overshoot it (crossarch background pair: EV_B 0.32/-0.05/0.33
    # on seeds 0-2 with 0.25, 0.86-0.87 with 0.0; EV_A 0.78 -> 0.82)
    data_init_frac: float = 0.0
    # a run of steps x batch_size samples trains at most one latent per `samples_per_latent` of them (None: every
    # latent); the rest of dict_size is not built (logged; metrics dict_size vs dict_size_requested). Why: 400 steps x
    # 256 SmolLM2 rows, held-out EV by width: 1,024 0.831, 2,048 0.835, 4,096 0.834, 8,192 0.820, 16,384 0.779 on 7.1k
    # rows and 4,096 0.844, 8,192 0.837, 16,384 0.805 on 29.6k rows (lr tuned per width only lifted 16,384 to
    # 0.789): latents beyond ~samples/25 see too few examples to converge and cost reconstruction. The reference
    # trainer reaches the same effective width by accident (uncentred inputs: 67-88% of its latents die). No shipped
    # suite is capped (quick: 400 x 128 / 25 = 2,048; gpu: 4,000 x 2,048 / 25 >> 16,384)
    samples_per_latent: float | None = 25.0
    aux_k: int | None = 64  # dead latents per token in the auxiliary loss (None: d/2)
    aux_rows: int = 256
    aux_coeff: float = 1 / 32
    dead_tokens: int = 20_000
    threshold_beta: float = 0.99
    threshold_start_frac: float = 0.1
    # inference threshold (train.refit_threshold), fitted on calibration rows: a `threshold_calib_frac` share of the
    # training rows kept out of the gradient steps (at most threshold_refit_rows). rule "ev": of the thresholds giving
    # L0 in [k/span, k*span] on them, the one that reconstructs them best; "l0": L0 = k on them
    threshold_calib_frac: float = 0.1
    threshold_refit_rows: int = 4096
    threshold_rule: Literal["ev", "l0"] = "ev"
    threshold_l0_span: float = 2.0
    score_norm: Literal["sum", "mean"] = "sum"  # BatchTopK score f_i * sum_m ||d_i^m|| ("mean": divided by the number of owning models)
    flag_b: float = 0.9  # relative decoder norm r >= flag_b ...
    flag_a: float = 0.1  # ... or r <= flag_a ...
    nu_r_max: float = 0.3  # ... AND Latent Scaling nu_r, nu_eps below these
    nu_eps_max: float = 0.3
    scaling_candidates: int = 200  # most one-sided live latents that get Latent Scaling
    scaling_tokens: int = 16384  # tokens (training + evaluation) Latent Scaling is fitted on


class BatchTopKBase(CrosscoderMethod):
    """The BatchTopK crosscoder method without a registered name: batchtopk_crosscoder, dfc and random_dictionary
    register subclasses of it."""

    sparsity = "batchtopk"
    Config = BatchTopKConfig
    cfg: BatchTopKConfig

    def trained_width(self) -> int:
        """dict_size, capped at steps x batch_size / samples_per_latent for a trained dictionary (see the config)."""
        c, steps = self.cfg, self.train_steps()
        if steps <= 0 or not c.samples_per_latent:
            return c.dict_size
        return max(1, min(c.dict_size, int(steps * c.batch_size // float(c.samples_per_latent))))

    def init_kwargs(self) -> dict[str, Any]:
        return {"score_norm": self.cfg.score_norm}

    def fit(self, ctx: PairContext) -> tuple[Crosscoder, PairData, dict[str, Any]]:
        c, width = self.cfg, self.trained_width()
        if width < c.dict_size:
            log.warning("%s on %s: training %d of the %d requested latents (%d steps x %d rows feed at most one latent per "
                        "%g samples; samples_per_latent)", self.name, ctx.pair_id, width, c.dict_size, self.train_steps(),
                        c.batch_size, c.samples_per_latent)
        return super().fit(ctx)

    def select(self, ctx: PairContext, cc: Crosscoder, data: PairData, metrics: dict[str, Any]) -> list[Finding]:
        c = self.cfg
        r = relative_norms(cc)
        alive = (metrics["_fires_train"] + metrics["_fires_eval"]) > 0
        rel = torch.maximum(r, 1 - r)
        rel = torch.where(alive, rel, torch.full_like(rel, -1.0))
        n_cand = min(c.scaling_candidates, int(alive.sum()))
        cand = torch.argsort(rel, descending=True)[: max(n_cand, 0)]
        if cand.numel() == 0:
            return []
        own = (r[cand] >= 0.5).long()  # 1 = B side
        scaling = None
        if cc.widths[0] == cc.widths[1]:
            xs = subsample([torch.cat([t, e]) for t, e in zip(data.train, data.eval)], c.scaling_tokens, ctx.seed)
            scaling = latent_scaling(cc, xs, cand, own, mode="threshold")
        out = []
        for j, i in enumerate(cand.tolist()):
            side = "b" if own[j] == 1 else "a"
            ri = float(r[i])
            one_sided = ri >= c.flag_b if side == "b" else ri <= c.flag_a
            info: dict[str, Any] = {"rel_norm": ri}
            if scaling is not None:
                nu_r, nu_e = float(scaling["nu_r"][j]), float(scaling["nu_eps"][j])
                if math.isfinite(nu_r) and math.isfinite(nu_e):
                    info.update(nu_r=nu_r, nu_eps=nu_e,
                                beta_r_a=float(scaling["beta_r"][0, j]), beta_r_b=float(scaling["beta_r"][1, j]),
                                beta_eps_a=float(scaling["beta_eps"][0, j]), beta_eps_b=float(scaling["beta_eps"][1, j]))
                    flagged = bool(one_sided and nu_r < c.nu_r_max and nu_e < c.nu_eps_max)
                    uniq = float(rel[i]) * (1.0 - min(1.0, max(0.0, nu_r, nu_e)))
                else:  # never passes the inference threshold on these tokens: no evidence either way
                    info["latent_scaling"] = "latent inactive at inference"
                    flagged, uniq = False, 0.0
            else:
                info["latent_scaling"] = "n/a (model widths differ)"
                flagged, uniq = bool(one_sided), float(rel[i])
            out.append((i, side, uniq, flagged, info))
        return self.emit(ctx, cc, data, metrics, out)
