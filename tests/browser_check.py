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
