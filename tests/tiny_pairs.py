"""A pair of tiny models that differ a little everywhere, like a fine-tune (crosscoder tests)."""

from __future__ import annotations

from pathlib import Path

import torch


def perturbed_pair(root: Path, texts: list[str], layer: int = 2):
    """PairContext of tiny-llama and a copy whose block-1 MLP is perturbed (std 0.05), with paired activations
    of `texts` at `layer` under `root`."""
    from diffbench.harness.models import load_model
    from diffbench.core.activations import TextSet
    from diffbench.harness.store import collect_pair
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
