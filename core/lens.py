"""Logit lens for many directions at once, with the float unembedding converted once per model.

Converting the (V x d) unembedding to fp32 per direction (~0.1 s for SmolLM2 in bf16) dominated
methods that report 20-50 findings, so it is cached here and every logit lens (`PairContext.logit_lens`
and `logit_lens_many` included) goes through `lens_ids`. The gain of the final norm is folded in
(`Family.norm_gain`: Gemma's RMSNorm scales by 1 + w).
"""

from __future__ import annotations

import torch

_CACHE: dict[tuple, torch.Tensor] = {}


def _key(weight: torch.Tensor, model) -> tuple:
    return (model.identity, weight.data_ptr(), tuple(weight.shape), str(weight.dtype), weight._version)


def unembedding(model) -> torch.Tensor:
    """The output embedding W_U [V, d] in fp32 (cached for the two most recent models)."""
    w = model.model.get_output_embeddings().weight
    key = _key(w, model)
    if key not in _CACHE:
        while len(_CACHE) >= 2:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = w.detach().float()
    return _CACHE[key]


def final_norm_gain(model) -> torch.Tensor:
    """The final RMSNorm's per-dimension gain (the model family says where the norm is and how it scales)."""
    family = model.family
    return family.norm_gain(family.final_norm(model.model))


@torch.no_grad()
def lens_ids(model, vecs: torch.Tensor, k: int = 20) -> list[list[int]]:
    """Top-k token ids of W_U (g * v) for each row v of vecs [m, d] (or one vector [d])."""
    vecs = vecs.reshape(-1, vecs.shape[-1]).float()
    w_u = unembedding(model)
    logits = (vecs.to(w_u.device) * final_norm_gain(model).to(w_u.device)) @ w_u.t()  # [m, V]
    return logits.topk(min(k, logits.shape[1]), dim=1).indices.tolist()


def decode(model, ids: list[int]) -> list[str]:
    return [model.tokenizer.decode([i]) for i in ids]


def lens(model, vecs: torch.Tensor, k: int = 20) -> list[tuple[list[int], list[str]]]:
    """(ids, tokens) per row of vecs, as `PairContext.logit_lens` returns for one vector."""
    return [(ids, decode(model, ids)) for ids in lens_ids(model, vecs, k)]
