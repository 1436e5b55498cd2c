"""Reading the residual stream: forward hooks on the decoder blocks, stopping after the deepest block needed."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from .model import LoadedModel


class _StopForward(Exception):
    """Raised by the last needed hook: blocks above it and the LM head are never run."""


@contextmanager
def residual_hooks(model: LoadedModel, layers: Sequence[int], stop: bool = False) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, forward passes of `model` record the residual stream after block L-1 (==
    output_hidden_states[L]) for each L into the yielded dict. `stop`: the deepest hook raises `_StopForward`
    (the caller catches it), so blocks above it and the LM head never run."""
    captured: dict[int, torch.Tensor] = {}
    blocks = model.decoder_layers()
    deepest = max(layers)

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output
            if stop and layer == deepest:
                raise _StopForward

        return hook

    handles = [blocks[layer - 1].register_forward_hook(make_hook(layer)) for layer in set(layers)]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def capture_residuals(model: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Residual stream after block L-1 for each L, stopping after the deepest (the LM head never runs)."""
    with residual_hooks(model, layers, stop=True) as captured:
        try:
            model.family.backbone(model.model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
    return captured
