"""Stage 5, report: the leaderboard (leaderboard.md) and plots (harness/report/leaderboard.py), and the HTML report to browse
findings (harness/report/html.py: html/index.html), from the score stage's files."""

from __future__ import annotations

from pathlib import Path

from ...core.env import say
from ..report.html import write_run_html
from ..report.leaderboard import write_report


def run(run_dir: Path) -> Path:
    """Write the report; the HTML index's path (the caller prints it with the lead table, once, at the end)."""
    write_report(run_dir)
    index = write_run_html(run_dir)
    say("report written: leaderboard.md, plots, html/")
    return index
