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


def header_end(ids: Sequence[int], header: ChatHeader) -> int:
    """Index just after the last assistant header in `ids`, or -1; only its `core` where the header's trailing
    whitespace merged with the answer's start."""
    ids = [int(i) for i in ids]
    end = _last_occurrence(ids, header.ids)
    return end if end >= 0 else _last_occurrence(ids, header.core)


def response_start(ids: Sequence[int] | torch.Tensor, header: ChatHeader | None) -> int:
    """The first response position of a text: right after the last assistant header; 1 (every position with a
    prediction) for a text without one (plain text, a tokenizer without a chat template); len(ids) (no response)
    for a chat text cut before its answer (it holds the template's turn token but no assistant header)."""
    ids = [int(i) for i in ids]
    if header is None:
        return min(1, len(ids))
    end = header_end(ids, header)
    if end >= 0:
        return max(1, end)
    if header.turn is not None and header.turn in ids:
        return len(ids)  # truncated to max_length before the assistant turn: no answer in the text
    return min(1, len(ids))


def turn_end_ids(tokenizer) -> list[int]:
    """Tokens that end an assistant turn, the template's own first: the special tokens the chat template puts right
    after an assistant message (SmolLM2's `<|im_end|>`, Gemma's `<end_of_turn>`), then eos; generation stops at the
    first of them."""
    out: list[int] = []
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
        try:
            text = tokenizer.apply_chat_template(msgs, tokenize=False)
        except Exception:  # a template that cannot render an assistant turn
            text = ""
        special = set(tokenizer.all_special_ids)
        out = [int(i) for i in tokenizer(text[text.rfind("y") + 1 :], add_special_tokens=False).input_ids if i in special] if text else []
    if tokenizer.eos_token_id is not None:
        out.append(int(tokenizer.eos_token_id))
    return list(dict.fromkeys(out))


def template_positions(ids: Sequence[int] | torch.Tensor, tokenizer, header: ChatHeader | None) -> torch.Tensor:
    """[n] bool: the chat template's own positions in a token sequence, i.e. its special tokens (`<|im_start|>`,
    `<|im_end|>`, eos), the role after a turn-opening token through its newline (`assistant\\n`), and the newline
    right after any other special token (the end of a turn). What remains is what a speaker wrote."""
    ids = [int(i) for i in ids]
    special = set(tokenizer.all_special_ids)
    opener = header.turn if header is not None else None
    mask = torch.zeros(len(ids), dtype=torch.bool)
    p = 0
    while p < len(ids):
        if ids[p] not in special:
            p += 1
            continue
        mask[p] = True
        q = p + 1
        if ids[p] == opener:  # the role name, through the newline that ends the turn's header
            while q < len(ids) and ids[q] not in special:
                mask[q] = True
                q += 1
                if "\n" in tokenizer.decode([ids[q - 1]]):
                    break
        elif q < len(ids) and ids[q] not in special and tokenizer.decode([ids[q]]) == "\n":
            mask[q] = True
            q += 1
        p = q
    return mask
