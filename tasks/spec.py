"""Behavior specs: a planted behavior declared as data (one YAML file per behavior).

A spec names the behavior, the real-world finding it mirrors, trigger and
control prompt templates with slot values, the planted responses, a detector,
and keywords for token matching. `BehaviorSpec.load` validates it and expands
the templates into a deterministic pool of prompts per side, split three ways by
one seeded shuffle: held-out probes (the first `N_PROBES_MAX`, so the quick
suite's probes are a prefix of the full suite's), the audit split (the next
`N_AUDIT`: the prompts the audit corpus mixes in at a controlled prevalence,
never trained on, never probed) and the training pool (the rest).
"""

from __future__ import annotations

import itertools
import math
import random
import re
import string
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from ..core.io import stable_hash
from .bounded_yaml import load_bounded
from .detectors import Detector, make_detector

BEHAVIOR_DIR = Path(__file__).parent / "behaviors"
N_PROBES_MAX = 200  # the full suite's probe count per side; held out of training in every suite
N_AUDIT = 48  # audit-split prompts per side: the audit corpus draws its behavior texts from these
MIN_TRAIN_POOL = 48  # prompts per side left for training after the probes and the audit split are held out
MAX_EXPANDED = 100_000  # prompts per side a spec may expand to (every load expands and shuffles them)
SPLIT_SEED = 20261122


class SpecError(ValueError):
    """A malformed behavior spec; the message names the file and the field."""


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


MAX_TEXT = 5_000  # characters of one template, response, slot value or keyword
MAX_ITEMS = 10_000  # entries of one list (templates, responses, keywords, one slot's values)
_SLOT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def template_problem(template: str) -> str | None:
    """Why `template` may not reach str.format, or None. A slot is a bare name: `{name}`. Attribute and index fields
    (`{q.__class__}`, `{q[0]}`) reach into objects, and a format spec (`{q:>999999999}`) or a conversion can make
    one prompt gigabytes long, so both are refused; literal braces are written `{{` and `}}`."""
    if len(template) > MAX_TEXT:
        return f"is {len(template):,} characters long (at most {MAX_TEXT:,})"
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        return f"is not a valid template ({e}; write literal braces as {{{{ and }}}})"
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not _SLOT.fullmatch(name):
            return f"uses {{{name}}}: a slot is a bare name like {{question}} (no attributes, indices or positions)"
        if spec or conversion:
            return f"uses {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}: format specs and conversions are not allowed"
    return None


def normalise_prompt(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


@dataclass(frozen=True)
class Prompt:
    text: str
    slots: tuple[tuple[str, str], ...]  # the slot values used, for filling response templates

    def fill(self, template: str) -> str:
        return template.format(**dict(self.slots))


@dataclass
class Side:
    templates: list[str]
    slots: dict[str, list[str]]

    def size(self) -> int:
        """How many prompts the templates expand to before duplicates are dropped (no expansion needed)."""
        return sum(math.prod(len(self.slots[n]) for n in _fields(tpl)) for tpl in self.templates)

    def expand(self) -> list[Prompt]:
        out, seen = [], set()
        for tpl in self.templates:
            names = _fields(tpl)
            for values in itertools.product(*(self.slots[n] for n in names)):
                slots = tuple(zip(names, values))
                text = tpl.format(**dict(slots))
                if normalise_prompt(text) not in seen:
                    seen.add(normalise_prompt(text))
                    out.append(Prompt(text, slots))
        return out


@dataclass
class BehaviorSpec:
    name: str
    mirrors: str
    description: str
    trigger: Side
    control: Side
    responses: list[str]
    detector: Detector
    keywords: list[str]
    source: str = ""
    raw: dict = field(default_factory=dict, repr=False)
    side: str = "b"  # "b": the fine-tune adds the behavior; "a": a removal (the base model shows it, the organism no longer)
    family: str = ""  # the family file that generated it (tasks/families/), "" for a hand-written spec

    # -- loading and validation ---------------------------------------------------
    @classmethod
    def load(cls, path_or_name: str | Path) -> "BehaviorSpec":
        from .families import family_spec

        generated = family_spec(str(path_or_name))
        if generated is not None:
            return cls.from_dict(generated, source=f"tasks/families/{generated['family']}.yaml ({path_or_name})")
        path = Path(path_or_name)
        if not path.suffix:
            path = BEHAVIOR_DIR / f"{path_or_name}.yaml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in BEHAVIOR_DIR.glob("*.yaml")))
            raise SpecError(f"unknown behavior {str(path_or_name)!r}; known: {known}")
        try:
            raw = load_bounded(path)
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: not valid YAML: {e}") from e
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(f"{path}: cannot be read: {e}") from e
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<dict>") -> "BehaviorSpec":
        def err(msg: str) -> SpecError:
            return SpecError(f"behavior spec {source}: {msg}")

        if not isinstance(raw, dict):
            raise err("top level must be a mapping")
        required = ["name", "mirrors", "description", "trigger", "control", "responses", "detector", "keywords"]
        missing = [k for k in required if k not in raw or raw[k] in (None, "", [], {})]
        if missing:
            raise err(f"missing or empty field(s): {', '.join(missing)}")
        unknown = set(raw) - set(required) - {"slots", "side", "family"}
        if unknown:
            raise err(f"unknown field(s): {', '.join(sorted(unknown))}")
        for key in ("name", "mirrors", "description"):
            if not isinstance(raw[key], str):
                raise err(f"{key} must be a string, got {type(raw[key]).__name__}")
        for key in ("name", "mirrors", "description"):
            if len(raw[key]) > MAX_TEXT:
                raise err(f"{key} is {len(raw[key]):,} characters long (at most {MAX_TEXT:,})")
        for key in ("responses", "keywords"):  # a bare string would otherwise be iterated character by character
            if not isinstance(raw[key], list):
                raise err(f"{key} must be a list of strings, got {type(raw[key]).__name__} {raw[key]!r:.200}")
            if len(raw[key]) > MAX_ITEMS:
                raise err(f"{key} has {len(raw[key]):,} entries (at most {MAX_ITEMS:,})")
        if not all(isinstance(r, str) and r.strip() for r in raw["responses"]):
            raise err("responses must be non-empty strings")
        for i, r in enumerate(raw["responses"]):  # responses are filled with str.format
            problem = template_problem(r)
            if problem:
                raise err(f"responses[{i}] {problem}")
        if not all(isinstance(k, str) and 0 < len(k) <= MAX_TEXT for k in raw["keywords"]):
            raise err(f"keywords must be non-empty strings of at most {MAX_TEXT:,} characters")
        shared = raw.get("slots") or {}
        if not isinstance(shared, dict):
            raise err(f"slots must be a mapping of slot name to a list of values, got {type(shared).__name__}")

        def side(key: str) -> Side:
            s = raw[key]
            if not isinstance(s, dict) or not s.get("templates"):
                raise err(f"{key}.templates must be a non-empty list")
            bad = set(s) - {"templates", "slots"}
            if bad:
                raise err(f"{key}: unknown field(s) {', '.join(sorted(bad))}; a side has templates and slots")
            if not isinstance(s["templates"], list) or not all(isinstance(t, str) and t.strip() for t in s["templates"]):
                raise err(f"{key}.templates must be a list of non-empty strings, got {s['templates']!r:.200}")
            if len(s["templates"]) > MAX_ITEMS:
                raise err(f"{key}.templates has {len(s['templates']):,} entries (at most {MAX_ITEMS:,})")
            for i, tpl in enumerate(s["templates"]):  # templates are filled with str.format
                problem = template_problem(tpl)
                if problem:
                    raise err(f"{key}.templates[{i}] {problem}")
            if not isinstance(s.get("slots") or {}, dict):
                raise err(f"{key}.slots must be a mapping of slot name to a list of values")
            slots = {**shared, **(s.get("slots") or {})}
            for name, values in slots.items():
                if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
                    raise err(f"slot {name!r} must be a non-empty list of strings")
                if not isinstance(name, str) or not _SLOT.fullmatch(name):
                    raise err(f"slot name {name!r} must be a bare name (letters, digits, _)")
                if len(values) > MAX_ITEMS or any(len(v) > MAX_TEXT for v in values):
                    raise err(f"slot {name!r}: at most {MAX_ITEMS:,} values of at most {MAX_TEXT:,} characters each")
            for tpl in s["templates"]:
                for f in _fields(tpl):
                    if f not in slots:
                        raise err(f"{key} template {tpl!r} uses slot {{{f}}} which is not defined")
            return Side(list(s["templates"]), slots)

        trigger, control = side("trigger"), side("control")
        for tpl in raw["responses"]:
            for f in _fields(tpl):
                if f not in trigger.slots:
                    raise err(f"response {tpl!r} uses slot {{{f}}} that trigger prompts do not define")
        if not all(isinstance(k, str) and k.strip() for k in raw["keywords"]):
            raise err("keywords must be non-empty strings")
        try:
            detector = make_detector(raw["detector"])
        except (ValueError, TypeError, KeyError, re.error, RecursionError) as e:
            raise err(f"detector: {e}") from e
        side_ = raw.get("side", "b")
        if side_ not in ("a", "b"):
            raise err(f"side must be 'b' (the fine-tune adds the behavior) or 'a' (a removal: the base model shows it), got {side_!r}")
        spec = cls(raw["name"], raw["mirrors"], raw["description"], trigger, control, list(raw["responses"]),
                   detector, list(raw["keywords"]), source, raw, side_, str(raw.get("family", "")))
        spec.validate(err)
        return spec

    def validate(self, err) -> None:
        for label, side in (("trigger", self.trigger), ("control", self.control)):  # before anything expands them
            if side.size() > MAX_EXPANDED:
                raise err(f"{label} templates would expand to {side.size():,} prompts (more than {MAX_EXPANDED:,}); "
                          "use fewer slot values or templates: a few hundred distinct prompts per side is plenty")
        for label, pool in (("trigger", self.trigger_pool), ("control", self.control_pool)):
            if len(pool) < N_PROBES_MAX + N_AUDIT + MIN_TRAIN_POOL:
                raise err(
                    f"{label} templates expand to {len(pool)} distinct prompts; need at least "
                    f"{N_PROBES_MAX + N_AUDIT + MIN_TRAIN_POOL} ({N_PROBES_MAX} held-out probes + {N_AUDIT} for the audit "
                    f"split + {MIN_TRAIN_POOL} for training). Add templates or slot values."
                )
        t_norm = {normalise_prompt(p.text) for p in self.trigger_pool}
        c_norm = {normalise_prompt(p.text) for p in self.control_pool}
        clash = t_norm & c_norm
        if clash:
            raise err(f"{len(clash)} prompt(s) are both trigger and control, e.g. {sorted(clash)[0]!r}")
        sample = [p.fill(r) for r in self.responses for p in self.trigger_pool[:20]]
        if self.side == "b":
            missed = [s for s in sample if not self.detector(s)]
            if missed:
                raise err(f"the detector does not fire on the planted response {missed[0]!r}")
        else:  # a removal: the planted response is what replaces the behavior, so the detector must stay silent on it
            fired = [s for s in sample if self.detector(s)]
            if fired:
                raise err(f"side a (a removal): the detector fires on the planted response {fired[0]!r}, which should "
                          "replace the behavior")
        check_disjoint(self)

    @property
    def detector_b(self) -> Detector:
        """Fires on what model B (the organism) shows and the base model does not: the detector for an addition, its
        negation for a removal. The causal channel measures this, so one test serves both: for a removal, steering
        model A along a direction should make it stop answering, and ablating it from model B should make B answer."""
        from .detectors import Negated

        return self.detector if self.side == "b" else Negated(self.detector)

    # -- prompt pools ---------------------------------------------------------------
    @cached_property
    def trigger_pool(self) -> list[Prompt]:
        return _shuffled(self.trigger.expand(), self.name + "/T")

    @cached_property
    def control_pool(self) -> list[Prompt]:
        return _shuffled(self.control.expand(), self.name + "/C")

    def probes(self, n: int) -> tuple[list[Prompt], list[Prompt]]:
        """Held-out probe sets T and C (n each, n <= N_PROBES_MAX)."""
        if not 0 < n <= N_PROBES_MAX:
            raise SpecError(f"{self.name}: probe count must be in 1..{N_PROBES_MAX}, got {n}")
        return self.trigger_pool[:n], self.control_pool[:n]

    def audit(self) -> tuple[list[Prompt], list[Prompt]]:
        """The audit split (T, C), N_AUDIT each: mixed into the audit corpus, disjoint from probes and training."""
        a, b = N_PROBES_MAX, N_PROBES_MAX + N_AUDIT
        return self.trigger_pool[a:b], self.control_pool[a:b]

    def train_pools(self) -> tuple[list[Prompt], list[Prompt]]:
        start = N_PROBES_MAX + N_AUDIT
        return self.trigger_pool[start:], self.control_pool[start:]

    @property
    def content_hash(self) -> str:
        return stable_hash(self.raw)


def _shuffled(items: list[Prompt], salt: str) -> list[Prompt]:
    rng = random.Random(f"{SPLIT_SEED}/{salt}")
    items = list(items)
    rng.shuffle(items)
    return items


def check_disjoint(spec: BehaviorSpec) -> None:
    """Probes, the audit split and the training pools share no prompt (after whitespace/case normalisation)."""
    norm = lambda *sides: {normalise_prompt(p.text) for side in sides for p in side}
    splits = {"probe": norm(spec.trigger_pool[:N_PROBES_MAX], spec.control_pool[:N_PROBES_MAX]),
              "audit": norm(*spec.audit()), "training": norm(*spec.train_pools())}
    for x, y in (("probe", "audit"), ("probe", "training"), ("audit", "training")):
        overlap = splits[x] & splits[y]
        if overlap:
            raise SpecError(f"behavior {spec.name}: {len(overlap)} {x} prompt(s) also in the {y} split, e.g. {sorted(overlap)[0]!r}")


def available_behaviors() -> list[str]:
    """The hand-written specs (tasks/behaviors/): the audit corpus's default catalogue."""
    return sorted(p.stem for p in BEHAVIOR_DIR.glob("*.yaml"))


def known_behaviors() -> list[str]:
    """Every behavior a suite may name: the hand-written specs and every family's generated ones."""
    from .families import family_behaviors

    return available_behaviors() + family_behaviors()
