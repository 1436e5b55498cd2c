"""The reports: leaderboard.md and runs.csv with plots, the HTML pages, finding snippets, and the browser check."""
