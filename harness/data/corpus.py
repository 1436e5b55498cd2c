"""The audit corpus: the chat text every method sees a pair through (DESIGN.md, "The audit corpus").

What an auditor would feed a diffing method: broad everyday chat prompts (tasks/everyday.py), plus, for
every behavior in the catalogue (every spec the package ships and every spec the suite names, planted in
this pair or not), prompts from its audit split, trigger and control alike, each side at prevalence `p`
of the corpus's texts. Each text is the chat-formatted prompt plus the base model's greedy answer; the
same text goes through both models. One corpus per suite (and base model): every pair sees the same
texts, so the corpus says nothing about what was planted where, and nothing in a text says which split
it came from. Probes and training prompts never enter it (the spec's splits are disjoint).

Sizing: `tokens` is the target size; the number of texts is fixed from the tokenizer (mean prompt
length over the everyday pool plus `answer_tokens`), so it does not depend on the generated answers.
Answers that stop early (EOS) make the corpus smaller than the target; the run folder's
`corpus/<base>.json` records the realised size.
Prevalence is a share of texts: round(p * n_texts) trigger and as many control prompts per behavior,
taken as a prefix of the behavior's audit split, so the corpus at p = 0.25% is contained in the one at 1%.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Mapping

from ...tasks.spec import BehaviorSpec, N_AUDIT, SpecError, available_behaviors
from .generate import chat_prompt

EVERYDAY = "everyday"


@dataclass(frozen=True)
class CorpusConfig:
    """The audit corpus of one suite (conf/suite/*.yaml, `corpus:`)."""

    tokens: int = 40_000  # target size in tokens (chat template + prompt + answer)
    prevalence: float = 0.01  # share of texts per (behavior, side) from the behavior's audit split
    answer_tokens: int = 48  # greedy answer length, the base model's
    seed: int = 0  # order of everyday prompts and of the corpus

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "CorpusConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown corpus option(s) {sorted(unknown)}; known: {', '.join(cls.__dataclass_fields__)}")
        cfg = cls(**d)
        if int(cfg.tokens) <= 0 or int(cfg.answer_tokens) <= 0:
            raise ValueError(f"corpus.tokens and corpus.answer_tokens must be positive, got {cfg.tokens}, {cfg.answer_tokens}")
        if not 0.0 <= float(cfg.prevalence) < 0.5:
            raise ValueError(f"corpus.prevalence is a share of texts per behavior and side, in [0, 0.5); got {cfg.prevalence}")
        return cls(int(cfg.tokens), float(cfg.prevalence), int(cfg.answer_tokens), int(cfg.seed))


@dataclass(frozen=True)
class CorpusPlan:
    """The corpus's prompts in order, and (for the record only; methods never see it) where each came from."""

    prompts: tuple[str, ...]
    sources: tuple[str, ...]  # "everyday" or "<behavior>/T" / "<behavior>/C"

    def composition(self) -> dict[str, int]:
        return dict(sorted(Counter(self.sources).items()))


def catalogue(suite_specs: Mapping[str, BehaviorSpec]) -> dict[str, BehaviorSpec]:
    """Every behavior an auditor's corpus mixes in: the package's specs and the suite's own."""
    out = {b: BehaviorSpec.load(b) for b in available_behaviors()}
    out.update(suite_specs)
    return dict(sorted(out.items()))


def n_texts_for(tokenizer, cfg: CorpusConfig, sample: list[str]) -> int:
    """Texts needed for `cfg.tokens`: mean chat-formatted prompt length over `sample`, plus the answer length."""
    lengths = [len(tokenizer(chat_prompt(tokenizer, p), add_special_tokens=False).input_ids) for p in sample]
    per_text = sum(lengths) / len(lengths) + cfg.answer_tokens
    return max(1, math.ceil(cfg.tokens / per_text))


def plan_for(tokenizer, specs: Mapping[str, BehaviorSpec], cfg: CorpusConfig) -> CorpusPlan:
    """The corpus's prompts for a tokenizer: `cfg.tokens` worth of texts (`n_texts_for` over 200 everyday prompts)."""
    from ...tasks.everyday import everyday_prompts

    return plan(catalogue(specs), n_texts_for(tokenizer, cfg, everyday_prompts(200, seed=cfg.seed)), cfg)


def plan(specs: Mapping[str, BehaviorSpec], n_texts: int, cfg: CorpusConfig) -> CorpusPlan:
    """The corpus's prompts: round(p * n) audit-split prompts per (behavior, side), everyday prompts for the rest."""
    from ...tasks.everyday import everyday_prompts

    per_side = round(cfg.prevalence * n_texts)
    if per_side > N_AUDIT:
        raise SpecError(f"corpus.prevalence={cfg.prevalence} of {n_texts} texts needs {per_side} audit prompts per behavior "
                        f"and side; the audit split holds {N_AUDIT}. Lower the prevalence or corpus.tokens.")
    items: list[tuple[str, str]] = []
    for name, spec in specs.items():
        t, c = spec.audit()
        if per_side > min(len(t), len(c)):
            raise SpecError(f"behavior {name}: corpus.prevalence={cfg.prevalence} of {n_texts} texts needs {per_side} audit "
                            f"prompts per side; its audit split has {len(t)} trigger and {len(c)} control prompts")
        items += [(p.text, f"{name}/T") for p in t[:per_side]] + [(p.text, f"{name}/C") for p in c[:per_side]]
    n_everyday = n_texts - len(items)
    if n_everyday <= 0:
        raise SpecError(f"corpus.prevalence={cfg.prevalence}: {len(items)} of {n_texts} texts would come from {len(specs)} "
                        "behaviors' audit splits, leaving nothing for everyday chat; lower the prevalence")
    items += [(p, EVERYDAY) for p in everyday_prompts(n_everyday, seed=cfg.seed)]
    random.Random(f"audit-corpus/{cfg.seed}").shuffle(items)
    return CorpusPlan(tuple(p for p, _ in items), tuple(s for _, s in items))
