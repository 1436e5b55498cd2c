"""Diffing methods, each registered by name; a new method is one file in this folder.

`load_all_methods()` imports every module here (and in sub-packages) so their
`@register_method` decorators run; methods from outside the package come in through
the `diffbench.methods` entry-point group or the `plugins=[...]` option (core/plugins.py).
"""

import importlib
import pkgutil


def load_all_methods() -> None:
    """The package's methods, then those installed packages announce (entry-point group `diffbench.methods`)."""
    from ..core.plugins import load_entry_points

    for info in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf in ("base",) or leaf.startswith("_") or leaf.startswith("test"):
            continue
        importlib.import_module(info.name)
    load_entry_points("diffbench.methods")
