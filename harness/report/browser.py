"""Open an HTML report in a real browser (Debian's Chromium, driven by Playwright): what it shows, what it
logged, what it tried to fetch, and a screenshot. Used by the report's browser test and by
scripts/screenshot_report.py. Needs the `playwright` package (the `test` extra) and a Chromium binary
(`apt-get install chromium`; .ci/run installs it); nothing is downloaded."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# Chromium's own background traffic (updates, sync, safe browsing) would count as network requests; the
# report itself must make none, so these are off and every request the page makes is recorded.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions"]


def chromium_path() -> str | None:
    for p in (os.environ.get("DIFFBENCH_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if p and Path(p).exists():
            return p
    return None


@dataclass
class PageCheck:
    url: str
    title: str
    text: str  # the page's visible text
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions
    external_requests: list[str] = field(default_factory=list)  # anything not read from the report folder
    failed_requests: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # CSS selector -> number of elements


def check_pages(files: list[Path], selectors: list[str] = (), screenshot_dir: Path | None = None, width: int = 1280,
                full_page: bool = True) -> list[PageCheck]:
    """Load each file in headless Chromium and record what happened; a PNG per file in screenshot_dir (the whole page,
    or the first screenful)."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError("no Chromium found: install Debian's package (apt-get install chromium) or set DIFFBENCH_CHROMIUM")
    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=FLAGS)
        try:
            for f in files:
                f = Path(f).resolve()
                page = browser.new_page(viewport={"width": width, "height": 900})
                chk = PageCheck(url=f.as_uri(), title="", text="")
                folder = f.parent.as_uri() + "/"
                page.on("console", lambda m, c=chk: c.console_errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e, c=chk: c.page_errors.append(str(e)))
                page.on("request", lambda r, c=chk: c.external_requests.append(r.url) if not r.url.startswith(folder) else None)
                page.on("requestfailed", lambda r, c=chk: c.failed_requests.append(r.url))
                page.goto(chk.url, wait_until="load")
                chk.title = page.title()
                chk.text = page.inner_text("body")
                chk.counts = {s: page.locator(s).count() for s in selectors}
                if screenshot_dir is not None:
                    Path(screenshot_dir).mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(Path(screenshot_dir) / f"{f.stem}.png"), full_page=full_page)
                page.close()
                out.append(chk)
        finally:
            browser.close()
    return out
