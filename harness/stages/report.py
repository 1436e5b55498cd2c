"""Stage 5, report: the leaderboard (leaderboard.md) and plots (harness/report/leaderboard.py), and the HTML report to browse
findings (harness/report/html.py: html/index.html), from the score stage's files."""

from __future__ import annotations

from pathlib import Path

from ..report.html import write_run_html
from ..report.leaderboard import write_report


def run(run_dir: Path) -> None:
    write_report(run_dir)
    print(f"[diffbench] HTML report: {write_run_html(run_dir)}", flush=True)
