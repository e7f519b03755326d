"""Shared fixtures: a real database per test (SQLite file, and PostgreSQL when
FITWATCH_TEST_POSTGRES_URL is set), a real server on a free port, a webhook receiver and the
session's browser; and the markers each test gets from what it needs. The code behind them
is in tests/support/."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from monitor_server.config import Settings
from tests.support.databases import BACKENDS, backend_database, fresh_pg_database, needs_postgres
from tests.support.pages import ARGS, CHROMIUM
from tests.support.servers import LiveServer, Receiver, serve

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    return backend_database(request, tmp_path)


@pytest.fixture
def start_server(database_url: str) -> Iterator[Callable[..., LiveServer]]:
    """Start a server on this test's database with settings overridden as given."""
    stack: list = []

    def start(**overrides) -> LiveServer:
        cm = serve(Settings(database_url=database_url, **overrides))
        stack.append(cm)
        return cm.__enter__()

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
def server(start_server) -> LiveServer:
    return start_server()


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def receiver():
    made = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


# Debian's Chromium driven by Playwright, headless: one for the whole session (a second
# sync Playwright in the same thread cannot start). Without Chromium the page tests skip,
# unless FITWATCH_REQUIRE_BROWSER=1 (CI), where a missing browser is a failure.
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by what it needs, from its fixtures and folder, so that no file has to
    (the markers are described in pyproject.toml; `slow` is also set by the modules and
    tests that run real Keras fits or take many seconds). This only adds markers: a plain
    `pytest` still runs every test; `-m` picks a tier."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        params = item.callspec.params if hasattr(item, "callspec") else {}
        if "browser" in fixtures:  # `page` and every page test's fixtures lead to it
            item.add_marker(pytest.mark.browser)
        if item.path.is_relative_to(HERE / "docker") or "engine" in fixtures:
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.slow)  # images are built and containers started: minutes
        if (
            params.get("database_url") == "postgresql"
            or "pg_database" in fixtures
            or any(mark == needs_postgres.mark for mark in item.iter_markers("skipif"))
        ):
            item.add_marker(pytest.mark.postgres)
