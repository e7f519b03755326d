"""Shared fixtures: a real database per test (SQLite file, and PostgreSQL when
FITWATCH_TEST_POSTGRES_URL is set) and a real server on a free port."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import psycopg
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from monitor_server import create_app
from monitor_server.config import Settings
from monitor_server.pgbus import libpq_url

PG_URL = os.environ.get("FITWATCH_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]
# CI sets FITWATCH_TEST_POSTGRES_URL, so these run there.
needs_postgres = pytest.mark.skipif(
    PG_URL is None, reason="needs FITWATCH_TEST_POSTGRES_URL (this machine's PostgreSQL)"
)
TABLES = "runs, series, chunks, summaries, received, commands, rules, rule_states, rule_firings"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def fresh_pg_database(prefix: str = "fitwatch_test") -> Iterator[str]:
    """A new, empty PostgreSQL database on FITWATCH_TEST_POSTGRES_URL's server, dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(PG_URL), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_url(PG_URL), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    with fresh_pg_database() as url:
        yield url


def _clean_postgres(url: str) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('public.runs')").fetchone()[0]
        if exists:
            conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fitwatch.db'}"
    url = request.getfixturevalue("pg_database")
    _clean_postgres(url)
    return url


@dataclass
class LiveServer:
    url: str
    app: object
    settings: Settings

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


@contextmanager
def serve(settings: Settings) -> Iterator[LiveServer]:
    """Run the app under uvicorn on a free port in a thread, until the block ends."""
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app, settings)
    finally:
        server.should_exit = True
        thread.join(10)


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


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class ServerProcess:
    """`python -m monitor_server` as its own process, so that a test can SIGKILL it."""

    def __init__(self, db_url: str, port: int | None = None) -> None:
        self.db_url = db_url
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, command: list[str] | None = None, env: dict[str, str] | None = None) -> ServerProcess:
        """Start `python -m monitor_server` (or `command`, with `env`) and wait for /healthz."""
        command = command or [sys.executable, "-m", "monitor_server", "--port", str(self.port), "--db", self.db_url]
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ready, 30, "the server to start")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Receiver:
    """A local HTTP endpoint that records the JSON it gets and answers with the statuses
    it is given in turn (then 200); `hold` keeps it from answering until released."""

    def __init__(self, statuses: list[int] | None = None, hold: bool = False) -> None:
        self.bodies: list[dict] = []
        self.statuses = list(statuses or [])
        self.release = threading.Event()
        if not hold:
            self.release.set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.bodies.append(body)
                outer.release.wait(60)
                self.send_response(outer.statuses.pop(0) if outer.statuses else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


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
CHROMIUM = os.environ.get("FITWATCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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
