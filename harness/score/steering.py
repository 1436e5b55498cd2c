"""Greedy generation under residual-stream interventions: the engine of the scorer's causal channel.

A finding's direction is a causal "strong hit" when steering with it (adding it) or removing it
(ablating it) turns the planted behavior on or off. `intervened_generate` answers that for many
directions at once; `behavior_rates` turns the answers into one detector rate per direction.

Per-row vectors. One `generate()` call serves many directions: a batch row is one (direction,
prompt) pair, and a forward hook on the block reads a [rows, d] tensor holding each row's own
direction. A method's findings (tens of directions) are thus scored in a few large batches
rather than one small generation per direction, and every row keeps the exact arithmetic of an
unsteered row: the no-intervention baseline is simply a zero vector (h + 0 and h - (h.0)0 are
both exactly h), so it can share batches with the steered rows.

Every position. The intervention applies to the prompt's positions as well as to each generated
token (the KV-cached decode steps, sequence length 1). Planted behaviors are triggered by the
prompt, and later tokens read the prompt's residual stream through attention: adding a direction
only at generated tokens would miss the context a trigger lives in, and ablating it only there
would leave it readable from every cached prompt position. This is the usual convention of
activation addition and directional ablation. The one exception is each row's first real token, the
attention sink (see `_RowHook`).

Cost model. rows = n_vectors (+1 baseline) x n_prompts; each row costs a forward pass over its
prompt (prefill) plus max_new_tokens - 1 single-token decode steps. Because the intervention
touches the prompt positions, the prefill of the blocks at and above the intervened one cannot be
shared between directions; the blocks below it see the same stream for every direction. The
default path (`shared_prefill`) therefore batches one prompt at a time: its blocks below the
intervention run once (batch 1), the hook broadcasts their output to one row per direction, and
the KV cache of those blocks is repeated to every row before the decode steps. Rows of one prompt
have one length, so there is no padding either. The prefill dominates the token count (chat prompts
of 20-30 tokens against a handful of new ones), so this saves most of the prefill below the
intervened layer (measured: `scripts/bench_steering.py`). `shared_prefill=False` is the plain
path: every (direction, prompt) row through `greedy_batch` (HF `generate`), left-padded and mixed
over prompts. Both give the same continuations up to batch-composition rounding (tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from transformers import DynamicCache

from ..data.generate import chat_prompt, greedy_batch
from ...core.model import LoadedModel


@dataclass
class Intervention:
    """`mode` applied to the output of decoder block `layer - 1` (residual index `layer`) at every position.

    add: h + v (v as given, already scaled); ablate: h - (h . u) u with u = v / |v|.
    `vectors` is [m, d]: one direction per intervention, each generated separately.
    """

    mode: Literal["add", "ablate"]
    layer: int
    vectors: torch.Tensor

    def __post_init__(self):
        if self.mode not in ("add", "ablate"):
            raise ValueError(f"unknown intervention mode {self.mode!r}; use 'add' or 'ablate'")
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be [m, d], got shape {tuple(self.vectors.shape)}")


def _row_vectors(iv: Intervention, model: LoadedModel, include_baseline: bool) -> torch.Tensor:
    """[m(+1), d] per-intervention vectors in the model's dtype/device; the baseline is a zero vector."""
    v = iv.vectors.detach().to(device=model.device, dtype=torch.float32)
    if v.shape[1] != model.hidden_size:
        raise ValueError(f"vectors have width {v.shape[1]}, the model's residual stream {model.hidden_size}")
    if iv.mode == "ablate":  # unit directions; a zero vector stays zero (an identity ablation)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    if include_baseline:
        v = torch.cat([torch.zeros_like(v[:1]), v])
    return v.to(model.dtype)


class _RowHook:
    """Forward hook applying one vector per batch row to a block's output (tuple or tensor).

    The first real token of each row (its attention sink: SmolLM2's residual norm there is orders of
    magnitude above the rest) and left padding are left alone: projecting any direction out of the sink's
    huge residual, or adding to it, breaks attention everywhere, so every direction, random ones included,
    would "remove" every behavior. Every later prompt position and every generated token is intervened on."""

    def __init__(self, mode: str):
        self.mode = mode
        self.rows: torch.Tensor | None = None  # [rows, d], set before each generate() call
        self.first: torch.Tensor | None = None  # [rows] index of each row's first real (non-pad) token
        self.broadcast = False  # a batch of one (a prompt's shared prefill) becomes one row per vector

    def __call__(self, _module, _inputs, out):
        h = out[0] if isinstance(out, tuple) else out
        v = self.rows
        if self.broadcast and v is not None and h.shape[0] == 1:
            h = h.expand(v.shape[0], -1, -1)
        if v is None or h.shape[0] != v.shape[0]:
            raise RuntimeError(f"steering hook: batch of {h.shape[0]} rows but {None if v is None else v.shape[0]} vectors set")
        v = v.unsqueeze(1)  # [rows, 1, d]: broadcast over the prompt (prefill) or the single decode position
        if self.mode == "add":
            delta = v.expand_as(h)
        else:  # projection in fp32 (bf16 dot products over d lose the small components)
            coef = (h.float() * v.float()).sum(-1, keepdim=True)
            delta = -(coef * v.float())
        if h.shape[1] > 1 and self.first is not None:  # prefill: skip padding and each row's sink token
            pos = torch.arange(h.shape[1], device=h.device)
            delta = delta * (pos[None, :] > self.first[:, None].to(h.device)).unsqueeze(-1).to(delta.dtype)
        h = h + delta.to(h.dtype)
        return (h, *out[1:]) if isinstance(out, tuple) else h


@torch.inference_mode()
def intervened_generate(
    model: LoadedModel,
    prompts: Sequence[str],
    iv: Intervention,
    *,
    max_new_tokens: int = 8,
    batch_size: int = 64,
    include_baseline: bool = True,
    shared_prefill: bool = True,
    progress: bool = False,
) -> list[list[str]]:
    """Greedy continuations of every prompt under each intervention vector.

    Returns one list per vector (a first one without intervention if `include_baseline`), each
    holding the continuation of every prompt in order. Prompts are user texts, chat-formatted and
    generated greedily as `greedy_generate` does, so a baseline row equals its output up to
    batch-composition rounding. `shared_prefill`: see the module's cost model.
    """
    if not 1 <= iv.layer <= model.n_layers - 1:
        raise ValueError(f"residual index {iv.layer} out of range 1..{model.n_layers - 1}")
    tok = model.tokenizer
    vecs = _row_vectors(iv, model, include_baseline)
    texts = [chat_prompt(tok, p) for p in prompts]
    out = [[""] * len(texts) for _ in range(len(vecs))]
    hook = _RowHook(iv.mode)
    handle = model.decoder_layers()[iv.layer - 1].register_forward_hook(hook)
    try:
        if shared_prefill:
            # batches: (prompt, a slice of at most batch_size vectors), prompt by prompt
            jobs = [(i, j0) for i in range(len(texts)) for j0 in range(0, len(vecs), batch_size)]
            for i, j0 in tqdm(jobs, desc=f"steer {model.name}", disable=not progress, leave=False):
                hook.rows = vecs[j0 : j0 + batch_size]
                for j, text in enumerate(_shared_prefill_batch(model, texts[i], hook, iv.layer, max_new_tokens), start=j0):
                    out[j][i] = text
        else:
            # rows (vector j, prompt i), longest prompts first so batches pad little (as greedy_generate)
            rows = sorted(((j, i) for j in range(len(vecs)) for i in range(len(texts))),
                          key=lambda r: (-len(texts[r[1]]), r[1], r[0]))

            def arm(enc: dict) -> None:  # left padding: the first 1 of the mask is the first real token
                hook.first = enc["attention_mask"].argmax(dim=1)

            for start in tqdm(range(0, len(rows), batch_size), desc=f"steer {model.name}", disable=not progress, leave=False):
                batch = rows[start : start + batch_size]
                hook.rows = vecs[[j for j, _ in batch]]
                for (j, i), text in zip(batch, greedy_batch(model, [texts[i] for _, i in batch], max_new_tokens, before=arm)):
                    out[j][i] = text
    finally:
        handle.remove()
    return out


def _shared_prefill_batch(model: LoadedModel, text: str, hook: _RowHook, layer: int, max_new_tokens: int) -> list[str]:
    """Greedy continuations of one formatted prompt, one row per vector in `hook.rows`. The prompt runs through the
    blocks below residual index `layer` once (batch 1); the hook broadcasts the stream to every row; after the
    prefill those blocks' KV cache is repeated to every row, and the decode steps run all rows through all blocks.
    Rows stop at the end-of-turn token (as `generate` with eos_token_id), decoded as `greedy_batch` decodes."""
    tok = model.tokenizer
    n = hook.rows.shape[0]
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
    hook.first = torch.zeros(n, dtype=torch.long)  # no padding: each row's sink is position 0
    hook.broadcast = True
    try:
        cache = DynamicCache(config=model.model.config)
        logits = model.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits
    finally:
        hook.broadcast = False
    for lower in cache.layers[:layer]:  # blocks 0 .. layer-1 ran with batch 1
        lower.batch_repeat_interleave(n)
    if logits.shape[0] != n:
        raise RuntimeError(f"shared prefill: {logits.shape[0]} rows of logits for {n} vectors")
    eos = tok.eos_token_id
    step = logits[:, -1].argmax(-1)
    tokens = [step]
    done = step == eos if eos is not None else torch.zeros_like(step, dtype=torch.bool)
    for _ in range(max_new_tokens - 1):
        if bool(done.all()):
            break
        logits = model.model(input_ids=step[:, None], cache=cache, use_cache=True).logits
        step = logits[:, -1].argmax(-1)
        tokens.append(step)
        if eos is not None:
            done |= step == eos
    gen = torch.stack(tokens, dim=1).tolist()
    texts = []
    for row in gen:
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        texts.append(tok.decode(row, skip_special_tokens=True).strip())
    return texts


def behavior_rates(responses: list[list[str]], detector: Callable[[str], bool]) -> np.ndarray:
    """[m(+1)]: per intervention, the share of prompts whose response the detector fires on."""
    return np.array([np.mean([bool(detector(r)) for r in row]) if row else 0.0 for row in responses], dtype=np.float64)
