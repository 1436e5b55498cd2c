"""Behavior families: one YAML file that generates many concrete behavior specs from slots.

A family (`tasks/families/<family>.yaml`) holds a spec template (the schema of tasks/behaviors/*.yaml, with
`${field}` placeholders) and a list of instances, each a mapping of field values. Instance `id` of family `f`
becomes the behavior `f__id`. Placeholders:

- `${field}` inside a string is replaced by the instance's value (which must then be a string);
- a string that is exactly `${field}` takes the value whole, so a field may be a list (slot values, responses);
  inside a list, such an element is spliced in;
- `${others.field}` is the list of that field's values over the family's other instances (matched controls:
  the same templates about another instance's topic);
- `shared:` values are fields every instance sees (long slot lists written once).

Every generated spec goes through `BehaviorSpec.from_dict`, so it is validated exactly like a hand-written one
(three disjoint splits, the detector fires on the planted response, ...). Adding a family is adding one file.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .bounded_yaml import load_bounded

FAMILY_DIR = Path(__file__).parent / "families"
SEP = "__"  # behavior name = <family>__<instance id>
_FIELD = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_WHOLE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_.]*)\}$")
_ID = re.compile(r"^[a-z0-9_]+$")


class FamilyError(ValueError):
    """A malformed family file; the message names the file and the field."""


def _substitute(node: Any, values: dict[str, Any], where: str) -> Any:
    if isinstance(node, str):
        whole = _WHOLE.match(node)
        if whole:
            return _lookup(values, whole.group(1), where)

        def one(m: re.Match) -> str:
            v = _lookup(values, m.group(1), where)
            if not isinstance(v, str):
                raise FamilyError(f"{where}: ${{{m.group(1)}}} is a {type(v).__name__}; only a string can sit inside text")
            return v

        return _FIELD.sub(one, node)
    if isinstance(node, list):
        out: list = []
        for item in node:
            v = _substitute(item, values, where)
            out += v if isinstance(item, str) and _WHOLE.match(item) and isinstance(v, list) else [v]
        return out
    if isinstance(node, dict):
        return {k: _substitute(v, values, where) for k, v in node.items()}
    return node


def _lookup(values: dict[str, Any], name: str, where: str) -> Any:
    if name not in values:
        raise FamilyError(f"{where}: placeholder ${{{name}}} has no value (fields: {', '.join(sorted(values))})")
    return values[name]


def load_family(path: Path) -> dict[str, dict]:
    """{behavior name: raw spec dict} for one family file (not yet validated as specs)."""
    where = str(path)
    try:
        raw = load_bounded(path)
    except yaml.YAMLError as e:
        raise FamilyError(f"{where}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise FamilyError(f"{where}: top level must be a mapping")
    unknown = set(raw) - {"family", "mirrors", "description", "shared", "behaviors", "spec"}
    if unknown:
        raise FamilyError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    family = raw.get("family")
    if not isinstance(family, str) or not _ID.match(family) or family != path.stem:
        raise FamilyError(f"{where}: `family` must be the file's stem in lower case letters, digits and _, got {family!r}")
    instances, template = raw.get("behaviors"), raw.get("spec")
    if not isinstance(instances, list) or not instances or not all(isinstance(i, dict) for i in instances):
        raise FamilyError(f"{where}: `behaviors` must be a non-empty list of mappings (one per generated behavior)")
    if not isinstance(template, dict):
        raise FamilyError(f"{where}: `spec` must be a behavior spec template (a mapping)")
    shared = raw.get("shared") or {}
    if not isinstance(shared, dict):
        raise FamilyError(f"{where}: `shared` must be a mapping of field name to value")
    ids = [str(i.get("id", "")) for i in instances]
    bad = [i for i in ids if not _ID.match(i)]
    if bad or len(set(ids)) != len(ids):
        raise FamilyError(f"{where}: every behavior needs a unique `id` of lower case letters, digits and _ (got {ids})")
    out = {}
    for inst, iid in zip(instances, ids):
        others = [o for o in instances if o is not inst]
        values = {**shared, "family": family, "mirrors": raw.get("mirrors", ""), "description": raw.get("description", ""), **inst}
        values.update({f"others.{k}": _flatten([o[k] for o in others if k in o]) for k in inst})
        name = f"{family}{SEP}{iid}"
        spec = _substitute(template, values, f"{where} behavior {iid!r}")
        spec.update(name=name, family=family)
        out[name] = spec
    return out


def _flatten(values: list) -> list:
    return [x for v in values for x in (v if isinstance(v, list) else [v])]


@lru_cache(maxsize=None)
def _all() -> dict[str, dict]:
    out: dict[str, dict] = {}
    for path in sorted(FAMILY_DIR.glob("*.yaml")):
        out.update(load_family(path))
    return out


def family_behaviors(family: str | None = None) -> list[str]:
    """Names of every generated behavior (of one family)."""
    return sorted(n for n in _all() if family is None or n.split(SEP)[0] == family)


def families() -> list[str]:
    return sorted(p.stem for p in FAMILY_DIR.glob("*.yaml"))


def family_spec(name: str) -> dict | None:
    """The raw spec of a generated behavior, or None if `name` is not one."""
    return _all().get(name) if SEP in name else None
