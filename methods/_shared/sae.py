"""A one-model BatchTopK sparse autoencoder on the crosscoder's machinery.

`Crosscoder([d], n_shared=n)` is a plain sparse autoencoder: one encoder, one decoder, the same
BatchTopK training (score f_i * ||d_i||, auxiliary loss on dead latents, inference threshold
re-fitted after training), data initialisation, schedule and CPU thread policy as the crosscoders.
The difference-dictionary and dictionary-drift baselines build on these helpers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ...core import NEVER_FIRES, MethodConfig, Readout
from ...core.env import bf16_flag
from ..crosscoder._lib.module import Crosscoder
from ..crosscoder._lib.train import TrainConfig, TrainResult, init_from_data, train
from ..crosscoder._lib.evaluate import iter_chunks

@dataclass
class SAEConfig(MethodConfig):
    """What the single-model (or difference) BatchTopK SAE methods share: dictionary, training and data options."""

    layer: int | None = None  # residual index; None = the pair's middle layer
    dict_size: int = 1024
    k: int = 32  # active latents per token on average (k * batch per batch)
    steps: int = 300
    batch_size: int = 256
    lr: float = 3e-3
    aux_k: int | None = 64
    aux_coeff: float = 1 / 32
    dead_tokens: int = 20_000
    data_init_frac: float = 0.25
    max_tokens: int = 40_000  # training rows (after dropping position 0 and outliers)
    max_eval_tokens: int = 8192
    eval_frac: float = 0.1
    drop_bos: bool = True
    outlier_factor: float = 10.0
    max_stat_tokens: int = 8192  # training rows the activation mass (ranking) is measured on
    max_findings: int = 50
    threads: int | str | None = "auto"  # torch CPU threads: auto = core/env.py pick_threads (every core under the diffbench command)
    bf16: bool | str | None = "auto"


def sae_train_config(cfg: SAEConfig, seed: int, device: str, steps: int | None = None) -> TrainConfig:
    """BatchTopK training of `cfg`'s dictionary on the torch backend (the schedule's warmup, decay and gradient clipping
    keep TrainConfig's defaults); `steps` overrides cfg.steps."""
    return TrainConfig(sparsity="batchtopk", steps=cfg.steps if steps is None else steps, batch_size=cfg.batch_size,
                       lr=cfg.lr, k=cfg.k, aux_k=cfg.aux_k, aux_coeff=cfg.aux_coeff, dead_tokens=cfg.dead_tokens,
                       seed=seed, backend="torch", bf16=bf16_flag(cfg.bf16, device), threads=None)


def fit_sae(x: torch.Tensor, cfg: SAEConfig, seed: int, device: str = "cpu",
            init: Crosscoder | None = None, steps: int | None = None, freeze_encoder: bool = False) -> tuple[Crosscoder, TrainResult]:
    """Train a BatchTopK SAE on rows x [N, d] (already normalised); `init`: continue from a copy of it
    (with `freeze_encoder`, only the decoder and its bias are trained)."""
    if init is None:
        sae = Crosscoder([x.shape[1]], n_shared=cfg.dict_size, seed=seed).to(x.device)
        init_from_data(sae, [x], seed=seed, data_frac=cfg.data_init_frac)
    else:
        sae = copy.deepcopy(init)
    frozen = [sae.b_enc, *sae.W_enc] if freeze_encoder else []
    for p in frozen:
        p.requires_grad_(False)
    try:
        res = train(sae, [x], sae_train_config(cfg, seed, device, steps))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    sae.eval()
    return sae, res


@dataclass
class SAEStats:
    ev: float  # explained variance
    l0: float
    fires: torch.Tensor  # [n] tokens on which each latent is active
    mass: torch.Tensor  # [n] sum of each latent's activation
    n_tokens: int


@torch.no_grad()
def sae_stats(sae: Crosscoder, x: torch.Tensor, chunk: int = 4096) -> SAEStats:
    """Inference-mode (threshold) statistics of `sae` on rows x."""
    sse, l0 = 0.0, 0.0
    fires = torch.zeros(sae.n, dtype=torch.long)
    mass = torch.zeros(sae.n, dtype=torch.float64)
    for (xb,) in iter_chunks([x], chunk):
        f = sae.encode([xb], "threshold")
        sse += float((xb - sae.decode(f)[0]).pow(2).sum())
        active = f > 0
        fires += active.sum(0).cpu()
        mass += f.sum(0).double().cpu()
        l0 += float(active.sum())
    sst = float((x - x.mean(0)).pow(2).sum())
    n = max(1, x.shape[0])
    return SAEStats(1 - sse / max(sst, 1e-12), l0 / n, fires, mass.float(), x.shape[0])


@torch.no_grad()
def latent_readout_weights(sae: Crosscoder, i: int, scale: float) -> tuple[torch.Tensor, float, float]:
    """Latent i as an affine read of RAW rows (x_raw * scale = the SAE's input): (w, bias, threshold)
    with f_i = relu(x_raw @ w + bias), counted where f_i > threshold (the BatchTopK inference
    threshold divided by the latent's decoder norm)."""
    w = (sae.W_enc[0][i].detach().float() * scale).cpu()
    bias = float(sae.readout_bias()[i])
    dn = float(sae.selection_norms()[i])
    threshold = float(sae.threshold) / dn if dn > 0 else NEVER_FIRES
    return w, bias, threshold


def latent_readout(sae: Crosscoder, i: int, scale: float, layer: int, on: str) -> Readout:
    """Readout of latent i on model B's activations (on="b"), or on the difference h_B - h_A (on="diff")."""
    w, bias, threshold = latent_readout_weights(sae, i, scale)
    if on == "diff":
        return Readout(layer_a=layer, layer_b=layer, kind="linear", w_a=-w, w_b=w.clone(), bias=bias, act="relu", threshold=threshold)
    return Readout(layer_a=layer, layer_b=layer, kind="linear", w_b=w, bias=bias, act="relu", threshold=threshold)


def raw_rows(data, m: int, split: str = "train") -> torch.Tensor:
    xs = data.train if split == "train" else data.eval
    return xs[m] / data.scales[m]
