"""The one type checker for configuration values read from YAML or the command line.

`fits(value, hint)` checks a value against a type annotation: ints pass for floats, lists for tuples, Literal values
must match, `X | None` allows null, `dict[str, V]` checks each value. Method configs (core/method.py) check their
parameters with it, and the run config's schema (harness/schema.py) checks every leaf with it.
"""

from __future__ import annotations

import numbers
import types
import typing
from typing import Any, Literal

import numpy as np


def fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        if origin is tuple and args and Ellipsis not in args and len(args) != len(value):
            return False
        return all(any(fits(v, a) for a in inner) for v in value) if inner else True
    if origin is dict or hint is dict:
        return isinstance(value, dict) and (not args or all(fits(k, args[0]) and fits(v, args[1]) for k, v in value.items()))
    return isinstance(value, hint) if isinstance(hint, type) else True


def hint_name(hint: Any) -> str:
    """A type annotation in words, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        names = ["a number" if a is float else hint_name(a) for a in args if not (a is int and float in args)]
        return " or ".join(dict.fromkeys(names))
    if origin in (list, tuple):
        return f"a list of {hint_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is None or hint is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", object: "any value", Any: "any value"}.get(
        hint, getattr(hint, "__name__", str(hint)))
