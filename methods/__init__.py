"""Diffing methods, each registered by name; a new method is one file."""
