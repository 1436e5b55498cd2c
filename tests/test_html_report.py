"""The benchmark run's HTML report (html/ in the run folder), opened in headless Chromium: the leaderboard and a
findings page render with no console error and no network request; a screenshot is taken. The index opens with a
summary (the lead table, floors' beaten cells marked) that fits above the fold at 1400x900, the plots are whole (not
clipped in the page nor in the PNG), a glossary explains every column, and no absolute path of the machine shows."""

import re

from browser_check import layout_check, open_clean, png_title_clipped


def test_run_report_renders_in_chromium(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    html = run_dir / "html"
    assert (html / "index.html").exists()
    pages = sorted(p for p in html.glob("mean_diff--*.html"))
    assert pages, sorted(p.name for p in html.iterdir())
    checks = open_clean([html / "index.html", pages[0]], ["table.leaderboard tr", "table.pages a", "img.plot", "div.finding",
                                                          "dl.glossary dt", "table.evidence tr"], tmp_path)
    overview, page = checks
    n_methods = len([l for l in (run_dir / "scores.csv").read_text().splitlines()[1:] if l.strip()])
    assert overview.counts["table.leaderboard tr"] == n_methods + 1  # one row per scored method, plus the header
    assert overview.counts["table.pages a"] > 0 and overview.counts["img.plot"] >= 1
    assert "Leaderboard" in overview.text and "R@5" in overview.text
    assert page.counts["div.finding"] > 0 and "method's own flag" in page.text and "calibrated flag" in page.text
    # a finding scored against a planted behavior (a row in matches.csv) shows its per-channel evidence table
    import csv

    from diffbench.harness.report.html import page_name

    with open(run_dir / "matches.csv") as f:
        scored = [r for r in csv.DictReader(f)]
    if scored:
        planted = html / page_name(scored[0]["method"], scored[0]["pair"])
        (chk,) = open_clean([planted], ["table.evidence tr"], tmp_path / "planted")
        assert chk.counts["table.evidence tr"] > 0 and "activation AUROC" in chk.text and "control change" in chk.text
    assert (tmp_path / "index.png").stat().st_size > 10_000

    # the glossary: present, and every column of the metric tables has an entry
    assert overview.counts["dl.glossary dt"] > 0 and "Glossary" in overview.text
    from diffbench.harness.report.html import GLOSSARY, glossary_key
    from diffbench.harness.report.leaderboard import columns
    import json

    scoring = json.loads((run_dir / "scores.json").read_text()).get("scoring") or {}
    for cols in columns(scoring):
        for _, label in cols:
            assert glossary_key(label) in GLOSSARY, label
            assert glossary_key(label) in overview.text

    # no absolute path of the machine that made the report, on any page
    for chk in checks:
        for root in {str(run_dir), str(run_dir.parent), "/tmp/", "/root/", "/home/"}:
            assert root not in chk.text, (chk.url, root)
        assert not re.search(r"(?<![\w.~…])/(tmp|root|home|usr|work)/", chk.text), chk.url

    # the summary above the fold at 1400x900; plots whole in the page and in their PNG
    lay = layout_check(html / "index.html")
    s = lay["summary"]
    assert s is not None and s["y"] < 350 and s["y"] + min(s["height"], 500) <= lay["height"], s  # it starts at the top, mostly in view
    assert lay["plots"]
    for p in lay["plots"]:
        assert p["complete"] and p["natural_w"] > 0, p
        assert p["left"] >= p["fig_left"] - 1 and p["right"] <= p["fig_right"] + 1 and p["right"] <= p["page_w"] + 1, p  # not cut
        assert abs(p["h"] / p["w"] - p["natural_h"] / p["natural_w"]) < 0.02, p  # scaled whole, not cropped
        assert not png_title_clipped(html / p["src"]), p["src"]
