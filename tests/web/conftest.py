"""Browser fixtures: Debian's Chromium driven by Playwright, headless, against a real
server. Without Chromium these tests skip, unless FITWATCH_REQUIRE_BROWSER=1 (CI), where
a missing browser is a failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM = os.environ.get("FITWATCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def database_url(tmp_path) -> str:
    """Page tests run on SQLite only; the server suite covers PostgreSQL."""
    return f"sqlite:///{tmp_path / 'fitwatch.db'}"


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not os.path.exists(CHROMIUM):
        if os.environ.get("FITWATCH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"FITWATCH_REQUIRE_BROWSER=1 but no Playwright or no Chromium at {CHROMIUM}")
        pytest.skip("no Chromium/Playwright (apt-get install chromium; pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


def watch(page, errors: list[str], console: bool = True) -> None:
    """Collect the page's failed scripts and, with `console`, its console errors into
    `errors`, for the test to fail on."""
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    if console:
        page.on(
            "console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        )


@pytest.fixture
def page(browser, server) -> Iterator[object]:
    """A fresh browser page; console errors and failed page scripts fail the test."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1366, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    watch(page, errors)
    page.errors = errors
    yield page
    context.close()
    assert not errors, errors
