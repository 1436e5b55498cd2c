"""diffbench harness: models, activation store, planting, scoring, report."""
