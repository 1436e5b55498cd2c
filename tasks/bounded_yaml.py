"""YAML loading with bounds, for files a user may have been sent (behavior specs, family files).

`yaml.safe_load` runs no code, but it still trusts the file's size: a few hundred bytes of nested anchors and aliases
(`a: &a [x, x]`, `b: &b [*a, *a]`, ...) compose into a graph that expands to billions of nodes as soon as anything
walks it (a 6 GB MemoryError after 106 s, issue #39). Here a file is refused, with a message that names it, when it
is larger than MAX_BYTES, uses more than MAX_ALIASES aliases, or its aliases expand to more than MAX_NODES nodes.
Hand-written specs use an alias or two (`templates: *templates`), far below every bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1_000_000
MAX_ALIASES = 200
MAX_NODES = 500_000


class YAMLBoundError(yaml.YAMLError):
    """A YAML file over a size bound (callers already turn YAMLError into their own error naming the file)."""


class BoundedLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """The safe loader on libyaml's C parser where it is installed (a 1 MB file of 100,000 list items took over 10 s
    to parse in pure Python on a busy machine, issue #39's fuzz), checked between composing and constructing."""

    def construct_document(self, node):
        if _expanded_size(node) > MAX_NODES:
            raise YAMLBoundError(f"its anchors and aliases expand to more than {MAX_NODES:,} values (an alias bomb?): refused")
        return super().construct_document(node)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded, counted once per distinct node (memoised), stopping early.
    A node met again is an alias (`*name`): more than MAX_ALIASES of them are refused."""
    memo: dict[int, int] = {}
    aliases = 0

    def size(node: yaml.Node, depth: int = 0) -> int:
        nonlocal aliases
        key = id(node)
        if key in memo:
            if memo[key] < 0:
                raise YAMLBoundError("an alias refers to a node that contains it (a recursive anchor): refused")
            aliases += 1
            if aliases > MAX_ALIASES:
                raise YAMLBoundError(f"more than {MAX_ALIASES} aliases (*name): refused, it could expand without bound")
            return memo[key]
        if depth > 200:
            raise YAMLBoundError("nested more than 200 levels deep: refused")
        memo[key] = -1
        n = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                n += size(child, depth + 1)
                if n > MAX_NODES:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                n += size(k, depth + 1) + size(v, depth + 1)
                if n > MAX_NODES:
                    break
        memo[key] = n
        return n

    return size(root)


def load_bounded(path: Path) -> Any:
    """yaml.safe_load of `path` within the bounds above; raises yaml.YAMLError (YAMLBoundError for a bound)."""
    size = Path(path).stat().st_size
    if size > MAX_BYTES:
        raise YAMLBoundError(f"{size:,} bytes, more than the {MAX_BYTES:,} a spec file may have: refused")
    try:
        return yaml.load(Path(path).read_text(), Loader=BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise YAMLBoundError("nested too deeply: refused") from None
