"""Reading the residual stream: forward hooks on the decoder blocks, stopping after the deepest block needed."""

from __future__ import annotations

from typing import Sequence

import torch

from .model import LoadedModel


class _StopForward(Exception):
    """Raised by the last needed hook: blocks above it and the LM head are never run."""


@torch.inference_mode()
def capture_residuals(model: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Residual stream after block L-1 (== output_hidden_states[L]) for each L, stopping after the deepest."""
    captured: dict[int, torch.Tensor] = {}
    blocks = model.decoder_layers()
    deepest = max(layers)
    handles = []

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output
            if layer == deepest:
                raise _StopForward

        return hook

    for layer in set(layers):
        handles.append(blocks[layer - 1].register_forward_hook(make_hook(layer)))
    try:
        model.model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured
