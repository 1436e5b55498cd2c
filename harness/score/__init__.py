"""Scoring findings against the planted ground truth: matching channels, nulls, the causal test, metrics, calibrated flags, significance."""
