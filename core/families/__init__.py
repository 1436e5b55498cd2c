"""Model families: where a causal LM of one architecture keeps what diffbench reads and trains.

A family says, for the Hugging Face `model_type`s it covers: the decoder blocks (the residual stream after
block L-1 is residual index L), the final norm and the per-dimension gain its RMSNorm applies (folded into
the logit lens), the norm a block's attention or MLP reads its input through (weight_svd's read directions),
and the LoRA target modules planting uses. A new family is one file in this folder that calls `register`.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..registry import Registry


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    lora_targets: tuple[str, ...]  # module names LoRA adapts when planting (a recipe's `targets` may override)
    blocks: Callable[[nn.Module], nn.ModuleList]  # the causal LM's decoder blocks, in order
    final_norm: Callable[[nn.Module], nn.Module]  # the norm before the unembedding
    mlp_input_norm: str  # attribute of a block: the norm the MLP reads through
    attn_input_norm: str = "input_layernorm"  # ... and the one attention reads through
    norm_offset: float = 0.0  # an RMSNorm's gain is offset + weight (Gemma: 1 + w)
    backbone: Callable[[nn.Module], nn.Module] = lambda lm: lm.model  # the causal LM without its head (embeddings + blocks)

    def norm_gain(self, norm: nn.Module) -> torch.Tensor:
        """The per-dimension gain an RMSNorm module applies, fp32."""
        return self.norm_offset + norm.weight.detach().float()


FAMILIES: Registry[Family] = Registry("model family")
_BY_TYPE: dict[str, Family] = {}


def register(family: Family) -> Family:
    FAMILIES.register(family.name)(family)
    for t in family.model_types:
        _BY_TYPE[t] = family
    return family


def family_of(model: nn.Module) -> Family:
    """The family of a Hugging Face causal LM (by its config's model_type); a clear error for an unknown one."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _BY_TYPE:
        raise ValueError(f"no model family for model_type {model_type!r}; known: {', '.join(sorted(_BY_TYPE))}. "
                         "Add one file to core/families/ (see llama.py)")
    return _BY_TYPE[model_type]


for _info in pkgutil.iter_modules(__path__):  # every family file registers itself
    importlib.import_module(f"{__name__}.{_info.name}")
