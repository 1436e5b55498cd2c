"""Stage 5, report: the leaderboard (leaderboard.md) and plots, from the score stage's files (harness/report.py)."""

from __future__ import annotations

from pathlib import Path

from ..report import write_report


def run(run_dir: Path) -> None:
    write_report(run_dir)
