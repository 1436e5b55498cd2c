"""Pairs of tiny models: one that differs a little everywhere, like a fine-tune (crosscoder tests); output plants."""

from __future__ import annotations

from pathlib import Path

import torch


def perturbed_pair(root: Path, texts: list[str], layer: int = 2):
    """PairContext of tiny-llama and a copy whose block-1 MLP is perturbed (std 0.05), with paired activations
    of `texts` at `layer` under `root`."""
    from diffbench.harness.models import load_model
    from diffbench.core.activations import TextSet
    from diffbench.harness.data.store import collect_pair
    from diffbench.core import PairContext

    ma = load_model("tiny-llama", dtype="fp32", device="cpu")
    mb = load_model("tiny-llama", dtype="fp32", device="cpu")
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in mb.model.model.layers[1].mlp.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    mb.identity = mb.identity + "-perturbed"
    pair = collect_pair(ma, mb, TextSet.of("t", texts), [layer], root=root / "acts", progress=False)
    return PairContext("tiny", ma, mb, pair, layers=[layer], seed=0, work_dir=root / "work")


def raise_logit(mb, token_id: int, m: torch.Tensor, strength: float) -> None:
    """Untie model B's unembedding and raise `token_id`'s row along m: its logit rises by strength * (h . m) / |m|^2
    where the final normed hidden state is h (by `strength` at h = m); the inputs and every other logit stay."""
    with torch.no_grad():
        w_u = mb.model.lm_head.weight.detach().clone()
        w_u[token_id] += strength * m / m.norm() ** 2
    mb.model.lm_head.weight = torch.nn.Parameter(w_u, requires_grad=False)
