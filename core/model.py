"""A loaded model as every part of diffbench sees it: the module, its tokenizer, and the identity in cache keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .families import Family


@dataclass
class LoadedModel:
    """A model ready for forward passes, with the identity used in cache keys."""

    name: str
    identity: str
    model: torch.nn.Module
    tokenizer: object

    @property
    def n_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def layer_index(self, layer: int | float) -> int:
        """Residual-stream index: int L = after L blocks; float in (0, 1) = relative depth."""
        return resolve_layer(layer, self.n_layers)

    @property
    def family(self) -> "Family":
        """Where this architecture keeps its blocks, final norm and LoRA targets (core/families/)."""
        from .families import family_of

        return family_of(self.model)

    def decoder_layers(self) -> torch.nn.ModuleList:
        return self.family.blocks(self.model)


def resolve_layer(layer: int | float, n_layers: int) -> int:
    if isinstance(layer, float) and not layer.is_integer():  # relative depth
        if not 0.0 < layer < 1.0:
            raise ValueError(f"relative layer depth must be in (0, 1), got {layer}")
        idx = int(round(layer * n_layers))
    else:
        idx = int(layer)
    if idx < 0:
        idx += n_layers
    if not 1 <= idx <= n_layers - 1:
        raise ValueError(
            f"layer {layer} resolves to residual index {idx}; valid indices are 1..{n_layers - 1} "
            f"(the output of block L-1; the final, normed stream is excluded)"
        )
    return idx
