# usage: python scripts/screenshot_report.py [--width 1400] OUT_DIR PAGE.html [PAGE.html ...]   (needs playwright and Debian's chromium)
"""Screenshots of HTML report pages (the first screenful: WIDTH x 900, default 1400 x 900, the size at which the
report's summary must fit above the fold) in headless Chromium, for the README and results/; prints each page's
console errors and requests outside its folder (there should be none)."""
import argparse
from pathlib import Path

from diffbench.harness.report.browser import check_pages

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--width", type=int, default=1400)
ap.add_argument("out", type=Path)
ap.add_argument("pages", type=Path, nargs="+")
args = ap.parse_args()
for c in check_pages(args.pages, screenshot_dir=args.out, width=args.width, full_page=False):
    print(f"{c.url.rsplit('/', 3)[-3:]}: title {c.title!r}; console errors {c.console_errors}; outside requests {c.external_requests}")
