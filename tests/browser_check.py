"""Shared by the HTML report's browser tests: open pages in headless Chromium and assert they render cleanly.

Without Chromium or Playwright the tests skip locally, but fail under CI=true: .ci/run installs both."""

import os

import pytest


def require_browser() -> None:
    from diffbench.harness.report.browser import chromium_path

    try:
        import playwright  # noqa: F401
    except ImportError:
        missing = "the playwright package (pip install -e '.[test]')"
    else:
        missing = None if chromium_path() else "Chromium (apt-get install chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser test under CI without {missing}: .ci/run installs it")
        pytest.skip(f"needs {missing}")


def open_clean(files, selectors, shots):
    """Load each page; assert no console error, no uncaught exception, no request outside the report folder."""
    from diffbench.harness.report.browser import check_pages

    require_browser()
    checks = check_pages(files, selectors, shots)
    for c in checks:
        assert not c.console_errors and not c.page_errors, (c.url, c.console_errors, c.page_errors)
        assert not c.external_requests and not c.failed_requests, (c.url, c.external_requests, c.failed_requests)
    return checks


def layout_check(page_file, width=1400, height=900):
    """Open `page_file` at width x height and measure: the summary's top and bottom (is it above the fold?), each plot's
    natural and rendered size and whether its figure shows all of it, and the page's visible text."""
    from playwright.sync_api import sync_playwright

    from diffbench.harness.report.browser import FLAGS, chromium_path

    require_browser()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            summary = page.locator("#summary").bounding_box()
            plots = page.eval_on_selector_all("img.plot", """imgs => imgs.map(i => {
                const r = i.getBoundingClientRect(), f = i.closest('figure') || i.parentElement, fr = f.getBoundingClientRect();
                return {src: i.getAttribute('src'), complete: i.complete, natural_w: i.naturalWidth, natural_h: i.naturalHeight,
                        w: r.width, h: r.height, left: r.left, right: r.right, fig_left: fr.left, fig_right: fr.right,
                        page_w: document.documentElement.clientWidth}; })""")
            text = page.inner_text("body")
            page.screenshot(path=str(page_file.parent / f"{page_file.stem}-fold.png"))
            page.close()
        finally:
            browser.close()
    return {"summary": summary, "plots": plots, "text": text, "height": height}


def png_title_clipped(path, margin=2) -> bool:
    """Whether anything is drawn in the outermost `margin` pixels of a PNG's left, right or top edge (a title or label
    cut by the figure's border touches it; a tight bounding box leaves a white margin)."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(path).convert("L"), dtype=np.int16)
    edges = [img[:, :margin], img[:, -margin:], img[:margin, :]]
    return any(int(e.min()) < 200 for e in edges)
