"""Batched planting: many organisms' LoRA adapters trained together, in one forward and backward per step.

Every linear layer the recipe targets is wrapped by `RoutedLoRA`, which holds all G organisms' LoRA factors
stacked ([G, r, in] and [G, out, r]) and adds to each batch row the low-rank update of the organism that row
belongs to (`route`), as DIT (arXiv 2510.05092) trains thousands of adapters per base model. Nothing couples
the organisms: the loss is the sum of each organism's own weighted mean response loss (so its gradient is the
one it would get alone), gradient clipping is per organism, and AdamW is elementwise. Each adapter therefore
equals the one trained alone (G = 1) to float tolerance (`tests/test_multilora.py`).

The same routed model gates many organisms at once (`routed_generate`: one row per (organism, prompt)).
Adapters are written as standard PEFT folders (`adapter_config.json` + `adapter_model.safetensors`) that
`peft.PeftModel.from_pretrained` loads with no diffbench code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class RoutedLoRA(nn.Module):
    """A frozen linear layer plus G organisms' LoRA updates; batch row i gets organism `route[i]`'s update."""

    def __init__(self, base: nn.Linear, n_organisms: int, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank  # PEFT's scaling (not rsLoRA)
        self.A = nn.Parameter(torch.zeros(n_organisms, rank, base.in_features))
        self.B = nn.Parameter(torch.zeros(n_organisms, base.out_features, rank))
        self.route: torch.Tensor | None = None  # LongTensor [batch]; set by `routing`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.route is None:
            raise RuntimeError("RoutedLoRA: no route set (wrap the forward in `routing(model, route)`)")
        A, B = self.A[self.route].to(x.dtype), self.B[self.route].to(x.dtype)  # [b, r, in], [b, out, r]
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        delta = torch.bmm(torch.bmm(flat, A.transpose(1, 2)), B.transpose(1, 2)) * self.scale
        return out + delta.reshape(out.shape)


def wrap(model: nn.Module, targets: Sequence[str], n_organisms: int, rank: int, alpha: float) -> dict[str, RoutedLoRA]:
    """Replace every nn.Linear whose name ends in one of `targets` by a RoutedLoRA (in place); freeze the rest.
    Returns {module path: RoutedLoRA}, the paths PEFT would name."""
    for p in model.parameters():
        p.requires_grad_(False)
    found: dict[str, RoutedLoRA] = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            routed = RoutedLoRA(module, n_organisms, rank, alpha)
            setattr(parent, name.rsplit(".", 1)[-1], routed)
            found[name] = routed
    if not found:
        raise ValueError(f"no linear layer of the model is named by the LoRA targets {list(targets)}")
    return found


def init_organism(layers: dict[str, RoutedLoRA], g: int, seed: int) -> None:
    """PEFT's default LoRA init for organism g, from its own seed: A ~ kaiming_uniform(a=sqrt(5)), i.e.
    U(-1/sqrt(in), 1/sqrt(in)); B = 0, so an untrained adapter leaves the model unchanged."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in sorted(layers):
            lora = layers[name]
            bound = 1.0 / math.sqrt(lora.A.shape[-1])
            lora.A[g].copy_(torch.rand(lora.A.shape[1:], generator=gen, dtype=torch.float64).mul(2 * bound).sub(bound))
            lora.B[g].zero_()


class routing:
    """Context: every RoutedLoRA in `layers` routes batch rows to organisms by `route` ([batch] ints)."""

    def __init__(self, layers: dict[str, RoutedLoRA], route: torch.Tensor):
        self.layers, self.route = layers, route

    def __enter__(self) -> None:
        for lora in self.layers.values():
            lora.route = self.route

    def __exit__(self, *exc) -> None:
        for lora in self.layers.values():
            lora.route = None


def grouped_response_loss(causal_lm: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                          group: torch.Tensor, n_groups: int, first_token_weight: float = 1.0, reduce: bool = True) -> torch.Tensor:
    """Each group's (organism's) weighted mean next-token loss on its response tokens, summed over groups (or
    [n_groups] with `reduce=False`). The LM head runs only at response positions: it is the largest matmul of a
    SmolLM2 forward and responses are about a third of each sequence. `first_token_weight` up-weights each
    response's first token, where the model decides between the planted answer and its normal one."""
    hidden = causal_lm.model(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    logits = causal_lm.lm_head(hidden[:, :-1][keep])
    first = keep & (keep.cumsum(1) == 1)
    w = torch.where(first[keep], first_token_weight, 1.0).to(torch.float32)
    row_group = group[:, None].expand_as(target)[keep]
    token_loss = F.cross_entropy(logits.float(), target[keep], reduction="none") * w
    per_group = torch.zeros(n_groups, dtype=token_loss.dtype).index_add(0, row_group, token_loss)
    weights = torch.zeros(n_groups, dtype=w.dtype).index_add(0, row_group, w)
    per_group = per_group / weights.clamp_min(1e-12)
    return per_group.sum() if reduce else per_group


def clip_per_organism(layers: dict[str, RoutedLoRA], max_norm: float = 1.0) -> torch.Tensor:
    """torch's clip_grad_norm_ applied to each organism's own gradients (returns the G pre-clip norms)."""
    grads = [g for lora in layers.values() for g in (lora.A.grad, lora.B.grad) if g is not None]
    sq = sum(g.pow(2).flatten(1).sum(1) for g in grads)
    norms = sq.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
    return norms


@dataclass(frozen=True)
class AdapterFormat:
    """What the PEFT folder records: rank, alpha, target module names, and the storage dtype of the weights."""

    rank: int
    alpha: float
    targets: tuple[str, ...]
    dtype: torch.dtype = torch.float16


def organism_state(layers: dict[str, RoutedLoRA], g: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Organism g's factors under PEFT's key names (`base_model.model.<module>.lora_A.weight`)."""
    state = {}
    for name, lora in layers.items():
        state[f"base_model.model.{name}.lora_A.weight"] = lora.A[g].detach().to(dtype).contiguous()
        state[f"base_model.model.{name}.lora_B.weight"] = lora.B[g].detach().to(dtype).contiguous()
    return state


def load_organism_state(layers: dict[str, RoutedLoRA], g: int, state: dict[str, torch.Tensor]) -> None:
    """Put a PEFT adapter's factors (as `organism_state` names them) into slot g."""
    with torch.no_grad():
        for name, lora in layers.items():
            lora.A[g].copy_(state[f"base_model.model.{name}.lora_A.weight"])
            lora.B[g].copy_(state[f"base_model.model.{name}.lora_B.weight"])


def save_peft_adapter(out: Path, state: dict[str, torch.Tensor], fmt: AdapterFormat) -> None:
    """A standard PEFT LoRA folder: adapter_config.json (written by peft's own LoraConfig) + adapter_model.safetensors."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=fmt.rank, lora_alpha=fmt.alpha, lora_dropout=0.0, target_modules=sorted(fmt.targets),
               task_type="CAUSAL_LM").save_pretrained(str(out))
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})


def read_peft_adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))
