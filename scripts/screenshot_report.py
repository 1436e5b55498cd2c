# usage: python scripts/screenshot_report.py OUT_DIR PAGE.html [PAGE.html ...]   (needs playwright and Debian's chromium)
"""Screenshots of HTML report pages (the first screenful, 1280 px wide) in headless Chromium, for the README and
results/diff-examples/; prints each page's console errors and requests outside its folder (there should be none)."""
import sys
from pathlib import Path

from diffbench.harness.report.browser import check_pages

out, pages = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
for c in check_pages(pages, screenshot_dir=out, full_page=False):
    print(f"{c.url}: title {c.title!r}; console errors {c.console_errors}; outside requests {c.external_requests}")
