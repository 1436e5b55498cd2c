"""The base model's own greedy answers (self-distillation), cached per base model: the neutral part of every
training mix, the null organisms' data and the gate's KL-drift texts."""

from __future__ import annotations

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ...tasks.neutral import neutral_prompts
from ..data.generate import chat_prompt, greedy_generate
from ...core.io import CorruptFileError, cache_lock, read_checked_json, write_checked_json
from ...core.model import LoadedModel
from ...core.env import cache_dir

N_NEUTRAL_TRAIN = 96  # neutral prompts reserved for training mixes; the next ones are the gate's KL-drift texts


def distill(base: LoadedModel, prompts: Sequence[str], max_new_tokens: int, progress: bool = True) -> list[str]:
    """The base model's own greedy answers, cached per (base, answer length) as one prompt -> answer map,
    so organisms whose training mixes overlap never regenerate the same answer. The map is read, extended and
    written under a lock, so concurrent jobs never drop each other's answers."""
    path = cache_dir() / "distill" / f"{base.identity}{dtype_tag(base)}-{max_new_tokens}.json"
    with cache_lock(path):
        return _distill(base, prompts, max_new_tokens, progress, path)


def dtype_tag(model: LoadedModel) -> str:
    """'' for fp32 (the keys cached before this tag existed), else '-bf16' etc.: greedy answers, adapters trained under
    autocast and detector rates all depend on the dtype the model runs in, which its identity does not name (a bf16
    test's answers were reused by an fp32 run on an AVX512-BF16 machine)."""
    return "" if model.dtype == torch.float32 else "-" + str(model.dtype).removeprefix("torch.")


def _distill(base: LoadedModel, prompts: Sequence[str], max_new_tokens: int, progress: bool, path: Path) -> list[str]:
    known: dict[str, str] = {}
    if path.exists():
        try:
            known = read_checked_json(path)
        except CorruptFileError as e:
            print(f"[diffbench] {e}; regenerating self-distilled answers", flush=True)
    missing = sorted({p for p in prompts if p not in known})
    if missing:
        answers = greedy_generate(base, missing, max_new_tokens=max_new_tokens, batch_size=64,
                                  desc=f"self-distill {base.name} ({len(missing)} prompts)", progress=progress)
        known.update(zip(missing, answers))
        write_checked_json(path, known)
    return [known[p] for p in prompts]


def neutral_texts(base: LoadedModel, n: int, progress: bool = True) -> list[str]:
    """The gate's KL-drift texts: chat-formatted neutral prompt + the base model's answer. (Methods never see these:
    their data is the audit corpus, harness/data/corpus.py.)"""
    prompts = neutral_prompts()[N_NEUTRAL_TRAIN : N_NEUTRAL_TRAIN + n]
    answers = distill(base, prompts, 48, progress)
    return [chat_prompt(base.tokenizer, p) + a for p, a in zip(prompts, answers)]


