"""Page fixtures: a fresh page of the session's Chromium (`browser`, in tests/conftest.py)
against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pages import watch


@pytest.fixture
def database_url(tmp_path) -> str:
    """Page tests run on SQLite only; the server suite covers PostgreSQL."""
    return f"sqlite:///{tmp_path / 'fitwatch.db'}"


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
