"""Page fixtures: a fresh page of the session's Chromium (`browser`, in tests/conftest.py)
against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def database_url(tmp_path) -> str:
    """Page tests run on SQLite only; the server suite covers PostgreSQL."""
    return f"sqlite:///{tmp_path / 'fitwatch.db'}"


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
