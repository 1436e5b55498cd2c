"""Plug-ins from outside the package: methods, detectors (or anything that registers itself) in a module or a
file of your own, loaded before the run's config is used.

    diffbench plugins=[my_pkg.my_method]              # an importable module
    diffbench plugins=[./my_method.py]                # a file (imported under a private module name)

An installed package can also announce its methods through the `diffbench.methods` entry-point group
(pyproject: `[project.entry-points."diffbench.methods"] my_method = "my_pkg.my_method"`); those are loaded
with the package's own methods. A plug-in registers with the same decorators as the package's own code
(`@register_method`, `@DETECTORS.register("kind")`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Iterable

from .io import stable_hash


class PluginError(ValueError):
    """A plug-in that cannot be found or fails on import."""


def load_plugins(entries: Iterable[str]) -> None:
    for entry in entries:
        entry = str(entry)
        path = Path(entry).expanduser()
        try:
            if entry.endswith(".py") or path.exists():
                if not path.is_file():
                    raise PluginError(f"plugin file {entry} does not exist")
                name = f"diffbench_plugin_{path.stem}_{stable_hash(str(path.resolve()), 8)}"
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(name, None)
                    raise
            else:
                importlib.import_module(entry)
        except PluginError:
            raise
        except ModuleNotFoundError as e:
            raise PluginError(f"plugin {entry!r}: {e} (give an importable module name or the path of a .py file)") from None
        except Exception as e:
            raise PluginError(f"plugin {entry!r} failed on import: {type(e).__name__}: {e}") from e


def load_entry_points(group: str = "diffbench.methods") -> None:
    """Import every module an installed package announces in `group`."""
    for ep in entry_points(group=group):
        try:
            ep.load()
        except Exception as e:
            raise PluginError(f"entry point {ep.name!r} = {ep.value!r} (group {group}) failed on import: "
                              f"{type(e).__name__}: {e}") from e
