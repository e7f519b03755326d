"""The databases the tests run on: a SQLite file, and PostgreSQL on the server of
FITWATCH_TEST_POSTGRES_URL (this machine's; CI sets it) when that is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from monitor_server.infra.pgbus import libpq_url

PG_URL = os.environ.get("FITWATCH_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]
# CI sets FITWATCH_TEST_POSTGRES_URL, so these run there.
needs_postgres = pytest.mark.skipif(
    PG_URL is None, reason="needs FITWATCH_TEST_POSTGRES_URL (this machine's PostgreSQL)"
)
TABLES = "runs, series, chunks, summaries, received, commands, rules, rule_states, rule_firings"


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


def clean_postgres(url: str) -> None:
    """Empty every table of the database at `url`, if it has them yet."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('public.runs')").fetchone()[0]
        if exists:
            conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


def backend_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """For a fixture parametrized with BACKENDS: an empty database of `request.param`, a
    SQLite file in `tmp_path` or the session's PostgreSQL database (fixture `pg_database`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fitwatch.db'}"
    url = request.getfixturevalue("pg_database")
    clean_postgres(url)
    return url
