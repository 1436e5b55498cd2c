"""Where the answer starts in a chat-formatted corpus text, from its token ids alone.

Corpus texts are `chat_prompt(tokenizer, user) + answer` (the tokenizer's own chat template with the generation
prompt, i.e. the assistant header, e.g. SmolLM2's `<|im_start|>assistant\\n`). The header's tokens are those the
template adds with `add_generation_prompt=True` to a dummy conversation; a text's response is every position after
the header's last occurrence. Methods may not import the harness, so this does not call `harness/data/generate.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class ChatHeader:
    ids: tuple[int, ...]  # the assistant header's tokens, as the template renders them
    core: tuple[int, ...]  # the same without trailing whitespace tokens
    turn: int | None  # the header's first token when it is a special token (it opens every turn of the template)


def chat_header(tokenizer) -> ChatHeader | None:
    """The assistant header of `tokenizer`'s chat template; None without a template (or an empty header)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    msgs = [{"role": "user", "content": "x"}]
    try:
        render = lambda gen: tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        with_gen, without = render(True), render(False)
    except Exception:  # a template that cannot render a lone user turn
        return None
    ids_with = tokenizer(with_gen, add_special_tokens=False).input_ids
    ids_without = tokenizer(without, add_special_tokens=False).input_ids
    # the header's tokens in context: what follows the common prefix (the tokens at the seam are those of a real text)
    k = 0
    while k < min(len(ids_with), len(ids_without)) and ids_with[k] == ids_without[k]:
        k += 1
    ids = tuple(int(i) for i in ids_with[k:])
    core = ids
    # the header's trailing newline can merge with the answer's first characters ("\n" + "\n" -> "\n\n")
    while core and not tokenizer.decode([core[-1]]).strip():
        core = core[:-1]
    if not core:
        return None
    turn = ids[0] if ids[0] in set(tokenizer.all_special_ids) else None
    return ChatHeader(ids, core, turn)


def _last_occurrence(ids: list[int], pattern: tuple[int, ...]) -> int:
    """Index just after the last occurrence of `pattern` in `ids`, or -1."""
    n = len(pattern)
    for s in range(len(ids) - n, -1, -1):
        if tuple(ids[s : s + n]) == pattern:
            return s + n
    return -1


def response_start(ids: Sequence[int] | torch.Tensor, header: ChatHeader | None) -> int:
    """The first response position of a text: right after the last assistant header; 1 (every position with a
    prediction) for a text without one (plain text, a tokenizer without a chat template); len(ids) (no response)
    for a chat text cut before its answer (it holds the template's turn token but no assistant header)."""
    ids = [int(i) for i in ids]
    if header is None:
        return min(1, len(ids))
    end = _last_occurrence(ids, header.ids)
    if end < 0:
        end = _last_occurrence(ids, header.core)  # the header's whitespace merged with the answer's start
    if end >= 0:
        return max(1, end)
    if header.turn is not None and header.turn in ids:
        return len(ids)  # truncated to max_length before the assistant turn: no answer in the text
    return min(1, len(ids))
