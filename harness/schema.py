"""The run configuration's schema: every key the harness reads, with its type, checked before any work starts.

Hydra merges `conf/` groups and command-line overrides into one config but checks nothing: a misspelt key
(`plant.stpes=80`, `+plant.foo=1`) would be silently ignored and a wrong type (`plant.steps=abc`) would fail
deep inside a stage, possibly after an hour of planting. `check_config` walks the resolved config against
SCHEMA and raises one ConfigError naming the key, the file group it comes from and what was expected.
Config is data, not code: `_target_` (Hydra's instantiate hook) is refused anywhere. `code_keys` (end of this file)
also finds Hydra callbacks, logging factories and classes, launcher/sweeper targets other than installed Hydra
plug-ins, and `plugins` that do not come from the command line; harness/cli.py applies it to every config Hydra
composes, before Hydra acts on it, and to a run folder's config.yaml before `diffbench report` reads it.

A spec is a type annotation (checked by core/typecheck.py, the one type checker), a dict for a nested mapping with
exactly these keys (`key?`: optional), AnyMapping(spec) for free keys, or OneOf(...) for alternatives of which one is
a mapping. The blocks with a config dataclass (collect, scoring, the suite's corpus) take their schema from it.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any

from ..core.typecheck import fits, hint_name
from .data.corpus import CorpusConfig
from .data.config import CollectConfig
from .plant.recipe import PlantRecipe
from .score.config import ScoringConfig, StrongConfig


class ConfigError(ValueError):
    """A config key is unknown or has the wrong type; the message names it."""


@dataclass(frozen=True)
class AnyMapping:
    """A mapping with free keys (method keys, model names), each value of `spec`."""

    spec: Any


@dataclass(frozen=True)
class OneOf:
    """Alternatives where one is a mapping (e.g. a nested block or null, `scoring.strong`: a block or true/false)."""

    alternatives: tuple


def dataclass_spec(cls: type, replace: dict | None = None) -> dict:
    """The schema of a config dataclass: each field by its type annotation, nested dataclasses as mappings; a field
    with a default is optional (the dataclass holds it)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        hint = hints[f.name]
        spec = (replace or {}).get(f.name, dataclass_spec(hint) if is_dataclass(hint) else hint)
        optional = f.default is not MISSING or f.default_factory is not MISSING
        out[f"{f.name}?" if optional else f.name] = spec
    return out


# Leaves are type annotations (core/typecheck.py checks them); mappings are dicts of key (`key?`: optional) -> spec.
PLANT = dataclass_spec(PlantRecipe)
SCORING = dataclass_spec(ScoringConfig, {"strong": OneOf((bool, dataclass_spec(StrongConfig)))})
SUITE = {"name": str, "behaviors": list[str], "zoo?": bool, "multi": list[list[str]] | None, "nulls": list[str] | None,
         "analogs": list[str] | None, "n_probes": int, "corpus": OneOf((dataclass_spec(CorpusConfig), None)),
         "method_seeds?": list[int] | None, "floor_seeds?": int | None, "floor_draws?": int | None, "methods?": list[str] | None,
         "n_neutral?": float,  # gone; Suite.from_config says what replaced it
         "groups?": OneOf((list[dict[str, Any]], None)),  # N-way groups: [{id, members}], checked by Suite.from_config
         "cross?": OneOf(({"a": str, "b": str, "planted_a?": list[str] | None, "planted_b?": list[str] | None,
                           "analogs?": list[str] | None, "background?": bool, "plant_recipes?": dict[str, str] | None}, None))}
SCHEMA = {
    "stages": list[str], "run_dir": str, "cache_dir": str | None, "device": str, "dtype": str, "progress": bool,
    "threads?": int | str | None,
    "plugins?": list[str] | None,
    "pairs?": list[str] | None,
    "collect": dataclass_spec(CollectConfig),
    "wandb": {"enabled": bool, "mode": str, "project": str},
    "model": {"name": str},
    "suite": SUITE,
    "plant": PLANT,
    "scoring": SCORING,
    "method?": OneOf((AnyMapping({"name": str, "params?": dict[str, Any] | None}), None)),
    "nway_method?": OneOf((AnyMapping({"name": str, "params?": dict[str, Any] | None}), None)),
}
# where a group's keys come from, for the error message
SOURCES = {"plant": "conf/plant/*.yaml", "suite": "conf/suite/*.yaml", "scoring": "harness/score/config.py's ScoringConfig",
           "model": "conf/model/*.yaml", "method": "conf/method/*.yaml", "nway_method": "conf/nway_method/*.yaml", "collect": "harness/data/config.py's CollectConfig"}
CHOICES = {"device": lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"), "dtype": lambda v: v in ("auto", "fp32", "bf16"),
           "threads": lambda v: v == "auto"}


def _is_mapping(spec: Any) -> bool:
    return isinstance(spec, (dict, AnyMapping))


def _check(value: Any, spec: Any, path: str, errors: list[str]) -> None:
    if isinstance(spec, OneOf):
        mapping = next((s for s in spec.alternatives if _is_mapping(s)), None)
        if isinstance(value, dict) and mapping is not None:
            return _check(value, mapping, path, errors)
        if not any(fits(value, s) for s in spec.alternatives if not _is_mapping(s)):
            words = " or ".join("a mapping" if _is_mapping(s) else hint_name(s) for s in spec.alternatives)
            errors.append(f"{path} must be {words}, got {type(value).__name__} {value!r}")
        return None
    if isinstance(spec, AnyMapping):
        if not isinstance(value, dict):
            errors.append(f"{path} must be a mapping, got {type(value).__name__} {value!r}")
            return None
        for k, v in value.items():
            _check(v, spec.spec, f"{path}.{k}", errors)
        return None
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            errors.append(f"{path} must be a mapping, got {type(value).__name__} {value!r}")
            return None
        return _check_mapping(value, spec, path, errors)
    if typing.get_origin(spec) is list and isinstance(value, list):  # each element's error is its own
        for i, v in enumerate(value):
            _check(v, typing.get_args(spec)[0], f"{path}[{i}]", errors)
        return None
    if not fits(value, spec):
        errors.append(f"{path} must be {hint_name(spec)}, got {type(value).__name__} {value!r}")
    return None


def _check_mapping(value: dict, schema: dict, path: str, errors: list[str]) -> None:
    keys = {k.rstrip("?"): k.endswith("?") for k in schema}
    for k in value:
        if k in ("_target_", "()"):
            errors.append(f"{path + '.' if path else ''}{k}: config is data, not code (no Hydra instantiation)")
        elif k not in keys:
            errors.append(f"{path + '.' if path else ''}{k} is not a known option; known: {', '.join(sorted(keys))}")
    for k, optional in keys.items():
        spec = schema.get(k, schema.get(k + "?"))
        if k not in value:
            if not optional:
                errors.append(f"{path + '.' if path else ''}{k} is missing")
            continue
        _check(value[k], spec, f"{path + '.' if path else ''}{k}", errors)


def _schema_errors(cfg: dict, schema: dict) -> list[str]:
    """Unknown keys and wrong types of a resolved config (its `hydra` block aside), code where data belongs, and
    choices out of CHOICES: every error, for one message."""
    errors: list[str] = []
    _check_mapping({k: v for k, v in cfg.items() if k != "hydra"}, schema, "", errors)
    # free-form values (method params) are not walked by the schema: a `_target_` there is refused all the same
    errors += [e for e in code_keys(cfg, plugins_allowed=True) if e not in errors]
    for key, ok in CHOICES.items():
        if isinstance(cfg.get(key), str) and not ok(cfg[key]):
            errors.append(f"{key}={cfg[key]!r} is not one of its choices")
    return errors


def check_config(cfg: dict) -> None:
    """Raise ConfigError listing every unknown key and wrong type of the resolved run config."""
    errors = _schema_errors(cfg, SCHEMA)
    if errors:
        where = sorted({SOURCES[e.split('.')[0].split('[')[0]] for e in errors if e.split('.')[0].split('[')[0] in SOURCES})
        raise ConfigError("invalid config (" + (", ".join(where) + " or " if where else "") + "a command-line override):\n  "
                          + "\n  ".join(errors))


def resolved_config(cfg: Any, where: str) -> dict:
    """A composed config as plain data, its interpolations resolved; one that does not resolve
    (`plant.steps=${oc.env:NOPE}`, `${missing.key}`, a `???` left unset) is a ConfigError naming the key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        key = getattr(e, "full_key", None)
        raise ConfigError(f"invalid config ({where}): {key + ': ' if key else ''}{first}") from None


# `diffbench diff` (conf/diff.yaml): checked at the start of harness/difftool/tool.py's run(), before any model loads
DIFF_SCHEMA = {
    "model_a": str | int | None, "model_b": str | int | None,  # a name or a folder (a folder may be named 2024)
    "models?": list[str | int] | None,  # N-way: instead of model_a/model_b (harness/difftool/nway.py)
    "nway_method?": OneOf((AnyMapping({"name": str, "params?": dict[str, Any] | None}), None)),
    "corpus": str | None, "audit_corpus": dataclass_spec(CorpusConfig), "reference": str, "calibration": str | None,
    "top": int, "evidence": int, "steer_prompts": int, "steer_tokens": int, "seed": int, "out": str,
    "cache_dir": str | None, "device": str, "dtype": str, "progress": bool, "plugins?": list[str] | None,
    "collect": dataclass_spec(CollectConfig),
    "method?": OneOf((AnyMapping({"name": str, "params?": dict[str, Any] | None}), None)),
}
# least value of the diff tool's counts (a wrong type is the schema's error, reported first)
DIFF_MINIMA = {"top": 1, "evidence": 0, "steer_prompts": 1, "steer_tokens": 1, "collect.batch_size": 1,
               "collect.max_length": 1, "collect.shard_tokens": 1}


def check_diff_config(cfg: dict) -> None:
    """Raise ConfigError listing every unknown key, wrong type, bad choice or out-of-range count of a resolved
    `diffbench diff` config (conf/diff.yaml and its overrides)."""
    errors = _schema_errors(cfg, DIFF_SCHEMA)
    if not errors:  # the types are right: the ranges
        for key, least in DIFF_MINIMA.items():
            group, _, name = key.rpartition(".")
            value = (cfg.get(group) or {}).get(name) if group else cfg.get(key)
            if isinstance(value, int) and value < least:
                errors.append(f"{key} must be at least {least}, got {value}")
        try:
            CorpusConfig.from_dict(cfg.get("audit_corpus"))
        except (TypeError, ValueError) as e:
            errors.append(f"audit_corpus: {e}")
    if errors:
        raise ConfigError("invalid diffbench diff option(s) (conf/diff.yaml or a command-line override):\n  "
                          + "\n  ".join(errors))


def check_recipe_schema(recipe: dict, where: str) -> None:
    """The plant recipe alone (a per-model recipe laid over the run's)."""
    errors: list[str] = []
    _check_mapping(recipe, PLANT, "plant", errors)
    if errors:
        raise ConfigError(f"invalid plant recipe ({where}):\n  " + "\n  ".join(errors))


# -- config is data: keys that make Hydra or `logging` import and call something -----------------------------------
# Hydra instantiates `hydra.callbacks.*`, the launcher and the sweeper (`_target_`), and hands `hydra.job_logging` /
# `hydra.hydra_logging` to logging.config.dictConfig, whose `()` factories, `class` names and `ext://` values are
# imported and called. A config file, a suite YAML on the search path or a command-line override could otherwise run
# any function (e.g. `builtins.open` truncating a file). Only Hydra's own logging classes and installed launcher or
# sweeper plug-ins pass.
SAFE_LOG_CLASSES = {"logging.StreamHandler", "logging.FileHandler", "logging.NullHandler", "logging.Formatter",
                    "logging.handlers.RotatingFileHandler", "logging.handlers.WatchedFileHandler"}
SAFE_EXT = {"ext://sys.stdout", "ext://sys.stderr"}
RISKY_ENV = ("LD_", "DYLD_", "PYTHON")  # hydra.job.env_set: a preloaded library or startup file runs in every subprocess


def _hydra_plugin_class(target: Any, kind: str) -> bool:
    """Whether `target` names an installed Hydra launcher/sweeper class (importing the plug-in package is benign)."""
    if not isinstance(target, str) or not target.startswith(("hydra._internal.core_plugins.", "hydra_plugins.")):
        return False
    try:
        from hydra.plugins.launcher import Launcher
        from hydra.plugins.sweeper import Sweeper
        from hydra.utils import get_class

        cls = get_class(target)
    except Exception:
        return False
    return isinstance(cls, type) and issubclass(cls, Launcher if kind == "launcher" else Sweeper)


def _walk(value: Any, path: str):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def code_keys(cfg: Any, *, plugins_allowed: bool) -> list[str]:
    """Every key of a config (unresolved container, with or without its `hydra` node) that would import or call code."""
    errors: list[str] = []
    if not isinstance(cfg, dict):
        return errors
    for path, v in _walk({k: v for k, v in cfg.items() if k != "hydra"}, ""):
        if isinstance(v, dict):
            errors += [f"{path + '.' if path else ''}{k}: config is data, not code (no Hydra instantiation)"
                       for k in v if k in ("_target_", "()")]
    hydra = cfg.get("hydra") if isinstance(cfg.get("hydra"), dict) else {}
    if hydra.get("callbacks"):
        errors.append("hydra.callbacks: config is data, not code (Hydra callbacks are refused)")
    for key in ("job_logging", "hydra_logging"):
        for path, v in _walk(hydra.get(key), f"hydra.{key}"):
            if isinstance(v, dict):
                if "()" in v:
                    errors.append(f"{path}.(): config is data, not code (no logging factories)")
                if "class" in v and v["class"] not in SAFE_LOG_CLASSES:
                    errors.append(f"{path}.class={v['class']!r}: config is data, not code (allowed: {', '.join(sorted(SAFE_LOG_CLASSES))})")
            elif isinstance(v, str) and v.startswith("ext://") and v not in SAFE_EXT:
                errors.append(f"{path}={v!r}: config is data, not code (allowed: {', '.join(sorted(SAFE_EXT))})")
    for path, v in _walk({k: w for k, w in hydra.items() if k not in ("job_logging", "hydra_logging")}, "hydra"):
        if isinstance(v, dict) and "_target_" in v:
            kind = path.split(".")[1] if path.count(".") == 1 else ""
            if kind not in ("launcher", "sweeper") or not _hydra_plugin_class(v["_target_"], kind):
                errors.append(f"{path}._target_={v['_target_']!r}: config is data, not code (only an installed Hydra "
                              "launcher or sweeper plug-in, e.g. hydra/launcher=joblib)")
    env = ((hydra.get("job") or {}).get("env_set") or {}) if isinstance(hydra.get("job"), dict) else {}
    errors += [f"hydra.job.env_set.{k}: refused (it would load code into every subprocess)"
               for k in env if str(k).upper().startswith(RISKY_ENV)]
    if cfg.get("plugins") and not plugins_allowed:
        errors.append(f"plugins={list(cfg['plugins'])}: plug-ins are code, so they come only from your command line "
                      "(plugins=[file.py]), never from a suite file or a run folder's config.yaml")
    return errors


def check_config_is_data(cfg: Any, *, plugins_allowed: bool, where: str) -> None:
    errors = code_keys(cfg, plugins_allowed=plugins_allowed)
    if errors:
        raise ConfigError(f"refused ({where}):\n  " + "\n  ".join(errors))


def sets_plugins(overrides: list[str]) -> bool:
    """Whether the command-line overrides set `plugins` (plugins=..., +plugins=..., ++plugins=...)."""
    return any(str(o).lstrip("+").split("=", 1)[0].strip() == "plugins" for o in overrides)
