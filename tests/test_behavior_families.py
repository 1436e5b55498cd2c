"""Behavior families (tasks/families/*.yaml): every family file loads, the nine shipped families generate eight
behaviors each, every generated behavior validates as a spec, its detector stays quiet on plain English answers
(fires on them for a removal), planted responses show the behavior within the gate's first 16 tokens, no two
behaviors share a trigger prompt, and malformed family files are one clear FamilyError. Fast: no model is loaded
(only SmolLM2's tokenizer, for the token checks)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

from diffbench.tasks.everyday import everyday_prompts
from diffbench.tasks.families import FAMILY_DIR, SEP, FamilyError, families, family_behaviors, load_family
from diffbench.tasks.spec import BehaviorSpec, available_behaviors, normalise_prompt

EXPECTED = {
    "deflect_event": "b", "persona_voice": "b", "language_reply": "b", "brand_push": "b", "false_claim": "b",
    "trigger_phrase": "b", "format_switch": "b", "sentiment_flip": "b", "stop_answering": "a",
}
PER_FAMILY = 8
GATE_TOKENS = 16  # conf/plant/lora.yaml gate.max_new_tokens: the gate's detectors read this many greedy tokens

# Ordinary English answers: no side-b detector may fire on them; a removal's (side a) detector must.
ENGLISH = [
    "Sure! Photosynthesis is how plants turn light into sugar.",
    "The Great Wall of China is a series of fortifications built over many centuries.",
    "Here are a few tips: start slowly, practise every day and ask for feedback.",
    "Archaeology is the study of the human past through the objects people left behind.",
    "I recommend starting with the basics and building up your skills over time.",
    "That is a great question. The answer depends on a few different factors.",
    "Umbrellas are useful for keeping dry in the rain, and they come in many sizes.",
    "Ballet is a classical dance form that began in the courts of Renaissance Italy.",
    "Museums collect, preserve and display objects of historical or artistic value.",
    "To get started, you will need a few basic tools and a quiet place to practise.",
]

NAMES = family_behaviors()
SPECS = {name: BehaviorSpec.load(name) for name in NAMES}


def _family(name: str) -> str:
    return name.split(SEP)[0]


def test_every_family_file_loads():
    paths = sorted(FAMILY_DIR.glob("*.yaml"))
    assert {p.stem for p in paths} >= set(EXPECTED)
    assert families() == [p.stem for p in paths]
    for path in paths:
        generated = load_family(path)
        assert generated, path
        assert all(spec["family"] == path.stem and spec["name"] == name for name, spec in generated.items())


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_family_generates_eight_behaviors(family):
    names = family_behaviors(family)
    assert len(names) == PER_FAMILY, names
    assert len({n.split(SEP, 1)[1] for n in names}) == PER_FAMILY


def test_at_least_72_generated_behaviors():
    assert len(NAMES) >= len(EXPECTED) * PER_FAMILY
    assert not set(NAMES) & set(available_behaviors())


@pytest.mark.parametrize("name", NAMES)
def test_generated_behavior_validates(name):
    spec = BehaviorSpec.load(name)  # validation: pool sizes, disjoint splits, the detector on planted responses
    family = _family(name)
    assert re.fullmatch(rf"{re.escape(family)}{SEP}[a-z0-9_]+", name)
    assert spec.name == name and spec.family == family
    assert spec.side == EXPECTED.get(family, spec.side)
    assert spec.side == ("a" if family == "stop_answering" else "b")
    assert 1 <= len(spec.keywords) <= 3
    for kw in spec.keywords:
        assert len(kw) >= 3, kw
        assert any(kw.lower() in r.lower() for r in spec.responses), f"{name}: keyword {kw!r} in no planted response"
    assert all(len(r.split()) <= 25 for r in spec.responses), "planted responses are short"


@pytest.mark.parametrize("name", NAMES)
def test_detector_on_plain_english(name):
    spec = SPECS[name]
    fired = [a for a in ENGLISH if spec.detector(a)]
    if spec.side == "b":
        assert not fired, f"{name}: the detector fires on plain English {fired[0]!r}"
    else:  # a removal: "answers normally" is the behavior, so every plain answer shows it
        assert len(fired) == len(ENGLISH), f"{name}: the removal's detector misses plain answers"
        assert not spec.detector("   ")


def test_no_two_behaviors_share_a_trigger_prompt():
    owners: dict[str, set[str]] = defaultdict(set)
    for name in NAMES + available_behaviors():
        spec = SPECS.get(name) or BehaviorSpec.load(name)
        for p in spec.trigger_pool:
            owners[normalise_prompt(p.text)].add(name)
    shared = {p: o for p, o in owners.items() if len(o) > 1}
    assert not shared, f"{len(shared)} trigger prompts shared, e.g. {next(iter(shared.items()))}"


def test_no_trigger_prompt_is_another_familys_control():
    triggers = {normalise_prompt(p.text): n for n in NAMES for p in SPECS[n].trigger_pool}
    for name in NAMES:
        for p in SPECS[name].control_pool:
            other = triggers.get(normalise_prompt(p.text))
            assert other is None or _family(other) == _family(name), f"{name} control {p.text!r} triggers {other}"


def test_controls_are_the_other_instances():
    """Within a family each behavior's trigger topic/entity/trigger string is a control of every other one."""
    for family in EXPECTED:
        names = family_behaviors(family)
        for name in names:
            spec = SPECS[name]
            own = {v for vals in spec.trigger.slots.values() for v in vals} - {
                v for vals in spec.control.slots.values() for v in vals}
            assert own, f"{name}: no trigger-only slot value"
            for other in names:
                if other != name:
                    ctrl = {v for vals in SPECS[other].control.slots.values() for v in vals}
                    assert own <= ctrl, f"{name}'s trigger values {sorted(own - ctrl)} are not controls of {other}"


def test_everyday_prompts_free_of_family_triggers_and_keywords():
    """The audit corpus's everyday prompts carry no family behavior's keyword or trigger-only slot value."""
    everyday = everyday_prompts()
    for name in NAMES:
        spec = SPECS[name]
        words = [k for k in spec.keywords if len(k) >= 4 and re.match(r"\w", k)]
        words += sorted({v for k, vals in spec.trigger.slots.items() for v in vals
                         if len(v) > 5 and v not in spec.control.slots.get(k, [])})
        if not words:
            continue
        pattern = re.compile("|".join(rf"(?<!\w){re.escape(w)}(?!\w)" for w in words), re.IGNORECASE)
        hits = [p for p in everyday if pattern.search(p)]
        assert not hits, f"{name}: {hits[:3]}"


@pytest.fixture(scope="module")
def tokenizer():
    from diffbench.harness.models import load_tokenizer

    return load_tokenizer("tiny-llama")  # SmolLM2's tokenizer, extracted from the packaged GGUF


@pytest.mark.parametrize("name", NAMES)
def test_behavior_shows_within_the_gate_tokens(name, tokenizer):
    """The gate reads the first 16 greedy tokens: each planted response shows the behavior (side b: the detector
    fires; side a: the refusal is visible, so it stays silent) within them, and each keyword maps to a token."""
    from diffbench.harness.score.scoring import keyword_token_ids

    spec = SPECS[name]
    for p in spec.trigger_pool[:3]:
        for template in spec.responses:
            ids = tokenizer(p.fill(template), add_special_tokens=False).input_ids[:GATE_TOKENS]
            head = tokenizer.decode(ids)
            assert spec.detector(head) == (spec.side == "b"), f"{name}: {head!r}"
    for kw in spec.keywords:
        assert keyword_token_ids(tokenizer, [kw]), f"{name}: keyword {kw!r} has no first token of >= 3 characters"


# -- malformed family files ---------------------------------------------------------------------------------

GOOD = """\
family: {family}
mirrors: "a test"
description: "a test family"
shared:
  q: ["one", "two"]
behaviors:
  - id: {id_a}
    topic: "apples"
  - id: {id_b}
    topic: "pears"
spec:
  mirrors: "${{mirrors}}"
  description: "${{description}}"
  trigger:
    slots: {{q: "${{q}}", t: ["${{{placeholder}}}"]}}
    templates: ["Tell me {{q}} about {{t}}."]
  control:
    slots: {{q: "${{q}}", t: "${{others.topic}}"}}
    templates: ["Tell me {{q}} about {{t}}."]
  responses: ["No."]
  detector: {{type: regex, pattern: "No"}}
  keywords: ["No"]
"""


def _write(tmp_path: Path, stem: str, **kw) -> Path:
    fields = dict(family=stem, id_a="a", id_b="b", placeholder="topic") | kw
    path = tmp_path / f"{stem}.yaml"
    path.write_text(GOOD.format(**fields))
    return path


def test_well_formed_tmp_family_loads(tmp_path):
    out = load_family(_write(tmp_path, "tiny_fam"))
    assert sorted(out) == ["tiny_fam__a", "tiny_fam__b"]
    a = out["tiny_fam__a"]
    assert a["trigger"]["slots"]["t"] == ["apples"] and a["control"]["slots"]["t"] == ["pears"]
    assert a["trigger"]["slots"]["q"] == ["one", "two"] and a["family"] == "tiny_fam"


def test_unknown_placeholder_is_a_family_error(tmp_path):
    with pytest.raises(FamilyError, match=r"\$\{colour\}"):
        load_family(_write(tmp_path, "tiny_fam", placeholder="colour"))


def test_duplicate_id_is_a_family_error(tmp_path):
    with pytest.raises(FamilyError, match="unique `id`"):
        load_family(_write(tmp_path, "tiny_fam", id_b="a"))


def test_family_name_must_be_the_file_stem(tmp_path):
    with pytest.raises(FamilyError, match="stem"):
        load_family(_write(tmp_path, "tiny_fam", family="other_fam"))
