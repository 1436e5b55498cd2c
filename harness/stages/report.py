"""Stage 5, report: the leaderboard (leaderboard.md) and plots (harness/report/leaderboard.py), and the HTML report to browse
findings (harness/report/html.py: html/index.html), from the score stage's files."""

from __future__ import annotations

from pathlib import Path

from ...core.env import say
from ..report.html import write_run_html
from ..report.leaderboard import write_report
from ..report.nway import nway_lines
from ...core.io import atomic_write


def run(run_dir: Path) -> Path | None:
    """Write the report; the HTML index's path (the caller prints it with the lead table, once, at the end). A run of
    N-way groups adds its section to leaderboard.md (the whole of it when the suite has no pairs; no HTML yet)."""
    run_dir = Path(run_dir)
    index = None
    if (run_dir / "scores.json").exists():
        write_report(run_dir)
        index = write_run_html(run_dir)
    if (run_dir / "nway_scores.json").exists():
        board = run_dir / "leaderboard.md"
        before = board.read_text(encoding="utf-8").rstrip() + "\n\n" if index is not None else ""
        atomic_write(board, before + "\n".join(nway_lines(run_dir)) + "\n")
    say("report written: leaderboard.md" + (", plots, html/" if index is not None else ""))
    return index
