"""Chat formatting and batched greedy generation (used by planting, the gate and self-distillation)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ...core.model import LoadedModel


def chat_prompt(tokenizer, user_text: str) -> str:
    """The user turn plus the assistant header, as text (the model's own chat template).

    Some templates (SmolLM2's) insert a default system prompt when none is given: 19 of
    the 40 tokens of a typical probe. An explicitly empty system turn is shorter, and every
    prompt is a third cheaper to train on, generate from and collect, so we render both and
    keep the shorter; templates without a default system prompt are unchanged.
    """
    if not tokenizer.chat_template:
        return f"User: {user_text}\nAssistant:"
    render = lambda msgs: tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    plain = render([{"role": "user", "content": user_text}])
    try:
        empty_system = render([{"role": "system", "content": ""}, {"role": "user", "content": user_text}])
    except Exception:  # templates that reject a system role
        return plain
    return empty_system if len(empty_system) < len(plain) else plain


def end_of_turn(tokenizer) -> str:
    return tokenizer.eos_token or ""


def user_content_offset(tokenizer, formatted: str, user_text: str) -> int:
    """Character offset where the user's text starts in a formatted prompt (scoring reads from there)."""
    i = formatted.rfind(user_text)
    return i if i >= 0 else 0


@torch.inference_mode()
def greedy_batch(model: LoadedModel, texts: Sequence[str], max_new_tokens: int, before: Callable[[dict], None] | None = None) -> list[str]:
    """Greedy continuations of one batch of formatted prompts, left-padded (so every row's last prompt token is
    at the same position); `before(enc)` sees the encoded batch before generation (steering reads its mask)."""
    tok = model.tokenizer
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    finally:
        tok.padding_side = old_side
    if before is not None:
        before(enc)
    gen = model.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                               eos_token_id=tok.eos_token_id, top_p=None, top_k=None, temperature=None)
    return [tok.decode(row, skip_special_tokens=True).strip() for row in gen[:, enc["input_ids"].shape[1] :]]


@torch.inference_mode()
def greedy_generate(
    model: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 32,
    desc: str | None = None,
    progress: bool = True,
) -> list[str]:
    """Greedy completions of chat-formatted user prompts, batched with left padding, length-sorted."""
    tok = model.tokenizer
    texts = [chat_prompt(tok, p) for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out: list[str] = [""] * len(texts)
    for start in tqdm(range(0, len(order), batch_size), desc=desc or f"generate {model.name}", disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        for i, text in zip(idx, greedy_batch(model, [texts[i] for i in idx], max_new_tokens)):
            out[i] = text
    return out
