"""The benchmark run's HTML report (html/ in the run folder), opened in headless Chromium: the leaderboard and a
findings page render with no console error and no network request; a screenshot is taken."""

from browser_check import open_clean


def test_run_report_renders_in_chromium(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    html = run_dir / "html"
    assert (html / "index.html").exists()
    pages = sorted(p for p in html.glob("mean_diff--*.html"))
    assert pages, sorted(p.name for p in html.iterdir())
    checks = open_clean([html / "index.html", pages[0]], ["table.leaderboard tr", "table.pages a", "img.plot", "div.finding"], tmp_path)
    overview, page = checks
    n_methods = len([l for l in (run_dir / "scores.csv").read_text().splitlines()[1:] if l.strip()])
    assert overview.counts["table.leaderboard tr"] == n_methods + 1  # one row per scored method, plus the header
    assert overview.counts["table.pages a"] > 0 and overview.counts["img.plot"] >= 1
    assert "Leaderboard" in overview.text and "R@5" in overview.text
    assert page.counts["div.finding"] > 0 and "method's flag" in page.text
    assert (tmp_path / "index.png").stat().st_size > 10_000
