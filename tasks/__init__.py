"""Behavior specs and organisms (tasks declared as data)."""
