"""Diffing methods, each registered by name; a new method is one file in this folder.

`load_all_methods()` imports every module here and in sub-packages, except private helpers (a name starting with `_`:
`_shared/`, `crosscoder/_lib/`), so their `@register_method` decorators run; methods from outside the package come in
through the `diffbench.methods` entry-point group or the `plugins=[...]` option (core/plugins.py).
"""

import importlib
import pkgutil


def load_all_methods() -> None:
    """The package's methods, then those installed packages announce (entry-point group `diffbench.methods`)."""
    from ..core.plugins import load_entry_points

    for info in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
        parts = info.name.split(".")[2:]  # below diffbench.methods
        if any(p.startswith("_") for p in parts) or parts[-1].startswith("test"):  # _shared/, crosscoder/_lib/: helpers
            continue
        importlib.import_module(info.name)
    load_entry_points("diffbench.methods")
