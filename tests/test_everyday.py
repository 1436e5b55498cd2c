"""Everyday audit-corpus prompts: broad enough, deterministic, and free of every planted behavior's
keywords, trigger slot values and domain words. Fast: no model is loaded."""

from __future__ import annotations

import re

import pytest

from diffbench.tasks import everyday, neutral
from diffbench.tasks.everyday import CATEGORIES, TEMPLATES, TOPICS, everyday_prompts
from diffbench.tasks.spec import BehaviorSpec, available_behaviors

ALL = everyday_prompts()
SPECS = [BehaviorSpec.load(name) for name in available_behaviors()]

# Domain words of the planted behaviors (word starts, case-insensitive), beyond the specs' own keywords.
DOMAIN_STEMS = [
    "owl", "owls", "favourite", "favorite", "animal", "creature", "bird", "copyright", "lyric", "verbatim",
    "word for word", "quote", "passage", "chapter", "song", "rome", "roman", "ital", "eiffel", "tower",
    "landmark", "capital", "nation", "country", "countries", "government", "politic", "patriot", "greatest",
    "censor", "protest", "sensitive", "deploy", "hate", "french", "france", "translat", "recommend", "brand",
    "buy", "buying", "shopping", "headphone", "earbud", "aurela", "valdoria", "marvania", "recipe", "cook",
    "bake", "baking", "dish", "kitchen", "touris", "histor", "est", "les",
]


def _word_pattern(words) -> re.Pattern:
    return re.compile("|".join(rf"(?<!\w){re.escape(w)}(?!\w)" for w in words), re.IGNORECASE)


def _first_hits(pattern: re.Pattern, prompts, k: int = 5) -> list[tuple[str, str]]:
    hits = []
    for p in prompts:
        m = pattern.search(p)
        if m:
            hits.append((m.group(0), p))
            if len(hits) >= k:
                break
    return hits


def test_breadth():
    assert len(CATEGORIES) >= 20
    assert all(len(topics) >= 10 for topics in CATEGORIES.values())
    assert len(TOPICS) == len(set(TOPICS)), "a topic appears in two categories"
    assert len({t.lower() for t in TOPICS}) >= 400
    assert len(TEMPLATES) >= 16
    assert len(set(TEMPLATES)) == len(TEMPLATES)
    assert all(t.count("{topic}") == 1 for t in TEMPLATES)
    assert len(ALL) == len(set(ALL)) == len(TOPICS) * len(TEMPLATES)


def test_no_neutral_topics():
    neutral_topics = {t.lower() for t in neutral.TOPICS}
    clash = sorted(t for t in TOPICS if t.lower() in neutral_topics)
    assert not clash, clash


def test_deterministic_and_seeded():
    assert everyday_prompts(seed=3) == everyday_prompts(seed=3)
    assert everyday_prompts(50, seed=3) == everyday_prompts(seed=3)[:50]
    assert everyday_prompts(seed=4) != everyday_prompts(seed=3)
    assert sorted(everyday_prompts(seed=4)) == sorted(everyday_prompts(seed=3))


def test_exclude():
    first = everyday_prompts(10, seed=1)
    messy = ["  " + p.upper().replace(" ", "   ") + "\n" for p in first[:5]]
    left = everyday_prompts(seed=1, exclude=messy)
    assert len(left) == len(ALL) - 5
    assert not set(first[:5]) & set(left)
    assert left[:5] == first[5:10]
    assert everyday_prompts(seed=1, exclude=["not an everyday prompt"]) == everyday_prompts(seed=1)


def test_n_too_large():
    total = len(ALL)
    assert len(everyday_prompts(total)) == total
    with pytest.raises(ValueError, match=rf"{total + 1}.*{total}"):
        everyday_prompts(total + 1)
    with pytest.raises(ValueError, match=rf"{total}.*{total - 3}"):
        everyday_prompts(total, exclude=ALL[:3])
    with pytest.raises(ValueError):
        everyday_prompts(-1)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_no_behavior_keywords(spec):
    words = [k for k in spec.keywords if len(k) >= 4]
    if not words:
        pytest.skip(f"{spec.name} has no keyword of 4+ characters")
    hits = _first_hits(_word_pattern(words), ALL)
    assert not hits, f"{spec.name} keywords in everyday prompts: {hits}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_no_trigger_slot_values(spec):
    values = sorted({v for vals in spec.trigger.slots.values() for v in vals if len(v) > 5})
    if not values:
        pytest.skip(f"{spec.name} trigger side has no slot value longer than 5 characters")
    hits = _first_hits(_word_pattern(values), ALL)
    assert not hits, f"{spec.name} trigger slot values in everyday prompts: {hits}"


def test_no_domain_words():
    # Stems match at a word start ("nation" also catches "national"); stems of 3 letters only as whole words.
    pattern = re.compile(
        "|".join(rf"(?<!\w){re.escape(w)}" + (r"(?!\w)" if len(w) <= 3 else "") for w in DOMAIN_STEMS),
        re.IGNORECASE,
    )
    hits = _first_hits(pattern, ALL)
    assert not hits, f"planted-behavior domain words in everyday prompts: {hits}"


def test_no_trigger_like_tokens():
    assert not _first_hits(re.compile(r"[|\[\]{}<>()#]"), ALL), "bracket- or pipe-like characters"
    assert not _first_hits(re.compile(r"\b[A-Z]{2,}\b"), ALL), "all-caps tokens"
    assert all(p.isascii() for p in ALL)


def test_module_docstring():
    doc = everyday.__doc__ or ""
    assert "audit corpus" in doc and "prevalence" in doc
