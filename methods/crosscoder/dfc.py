"""Dedicated Feature Crosscoder (Jiralerspong & Bricken 2026, arXiv 2602.11729).

A BatchTopK crosscoder whose dictionary is partitioned into A-exclusive, shared and B-exclusive
sections (default 5% of the latents per exclusive section). A-exclusive latents read and write only
model A and vice versa, by construction: those latents have no encoder or decoder weights for the
other model at all (each model's weights cover only the latents it owns), so neither the main loss,
the auxiliary loss nor the optimiser state can give them any. Model widths may differ.

Findings: the exclusive latents that fired on the training tokens (B-exclusive -> side "b",
A-exclusive -> side "a"), ranked by activation mass (sum of inference activations over the
training tokens; uniqueness = mass per training token); flagged if alive, i.e. fired at least once
on the held-out evaluation tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...core import Finding, PairContext, register_method
from ._lib.batchtopk_base import BatchTopKBase, BatchTopKConfig
from ._lib.method import PairData
from ._lib.module import Crosscoder
from ._lib.evaluate import latent_mass


@dataclass
class DFCConfig(BatchTopKConfig):
    excl_frac_a: float = 0.05  # share of dict_size that is A-exclusive
    excl_frac_b: float = 0.05  # ... B-exclusive
    data_init_frac: float = 0.0  # measured: data-initialised shared latents grab one-model features first


@register_method
class DedicatedFeatureCrosscoder(BatchTopKBase):
    name = "dfc"
    Config = DFCConfig
    cfg: DFCConfig

    def sections(self, dict_size: int) -> tuple[int, int, int]:
        n_a = int(round(self.cfg.excl_frac_a * dict_size))
        n_b = int(round(self.cfg.excl_frac_b * dict_size))
        if n_a + n_b >= dict_size:
            raise ValueError("exclusive sections leave no shared latents")
        return n_a, dict_size - n_a - n_b, n_b

    def select(self, ctx: PairContext, cc: Crosscoder, data: PairData, metrics: dict[str, Any]) -> list[Finding]:
        fires_eval = metrics["_fires_eval"]
        n_train = max(1, data.train[0].shape[0])
        out = []
        for section, side in (("a", "a"), ("b", "b")):
            sl = cc.section_slice(section)
            latents = torch.arange(sl.start, sl.stop)
            if latents.numel() == 0:
                continue
            mass = latent_mass(cc, data.train, latents, mode="threshold")  # over all training tokens
            for j, i in enumerate(latents.tolist()):
                if float(mass[j]) <= 0:
                    continue
                out.append((i, side, float(mass[j]) / n_train, bool(fires_eval[i] > 0),
                            {"mass": float(mass[j]), "mass_per_token": float(mass[j]) / n_train}))
        return self.emit(ctx, cc, data, metrics, out)
