"""Batching token sequences of different lengths for one forward pass."""

from __future__ import annotations

from typing import Sequence

import torch


def right_pad(seqs: Sequence[Sequence[int] | torch.Tensor], pad_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [B, W], attention_mask [B, W]): each sequence from the left, `pad_id` (0 when the tokenizer has
    none) after it, W the longest length. Right padding keeps each token at its own position, so a
    sequence's activations do not depend on what it is batched with (up to float rounding)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids, mask
