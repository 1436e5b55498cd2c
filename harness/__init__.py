"""diffbench harness: models, activation store, planting, scoring, report."""

from .config_defaults import register as _register_config_defaults

_register_config_defaults()  # before any Hydra compose of conf/ (the CLI's, a test's): see config_defaults.py
