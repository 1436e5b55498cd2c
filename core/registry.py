"""Name -> object registries, so a new method, model or task is one file."""

from __future__ import annotations

import difflib
import importlib
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that no registry entry has; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}  # name -> module that registers it when imported


    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def register_lazy(self, names: list[str], module: str) -> None:
        """Names that `module` registers when imported: listed and resolvable, but the module is imported only
        when one of them is asked for (the test models are not built into every run)."""
        for name in names:
            self._lazy[name] = module

    def get(self, name: str) -> T:
        if name not in self._items and name in self._lazy:
            importlib.import_module(self._lazy[name])
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._items)) or '(none)'}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted({*self._items, *self._lazy})

    def values(self) -> list[T]:
        """Everything registered, in registration order."""
        return list(self._items.values())

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._lazy
