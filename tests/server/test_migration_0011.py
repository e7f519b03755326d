"""Migration 0011: rules made before it are bounded by the default `max_firings`, their
earlier firings counted; a downgrade keeps rules and firings, the suppressed counts aside."""

from __future__ import annotations

import sqlalchemy as sa

from monitor_server.infra.db import make_engine
from tests.server.test_migration_0006 import database_url, migrate
from tests.server.test_rules import firings, flapping
from tests.support.api import post_logs

__all__ = ["database_url"]  # the fixture: a database of its own at no revision

OLD_RULE = (
    'INSERT INTO rules (id, "when", "then", notify, once_per_run, created_at) VALUES '
    """(7, '{"scope": "batch", "name": "loss", "op": "above", "value": 0.5}', '{"type": "checkpoint"}', """
    "false, false, 1.0)"
)


def execute(url: str, *statements: str) -> list:
    engine = make_engine(url)
    with engine.begin() as conn:
        rows = [
            conn.execute(sa.text(s)).all() if s.startswith("SELECT") else conn.execute(sa.text(s)) for s in statements
        ]
    engine.dispose()
    return rows


def test_old_rules_get_the_default_bound_and_keep_their_firings(database_url, start_server):
    migrate(database_url, "0010")
    execute(
        database_url,
        "INSERT INTO runs (id, name, project, status, config, created_at, updated_at, last_seen) "
        "VALUES ('r', 'r', 'p', 'running', '{}', 1.0, 2.0, 4e9)",
        OLD_RULE,
        "INSERT INTO rule_firings (rule_id, run_id, key, step, value, created_at) "
        "VALUES (7, 'r', 'step:-2', -2, 1.0, 1.0)",
    )
    with start_server().client() as api:  # migrates to the newest revision
        rule = api.get("/api/v1/rules/7").json()
        assert (rule["max_firings"], rule["firings"], rule["suppressed"]) == (100, 1, 0)
        post_logs(api, "r", flapping(0, 300))  # turns true 150 times: 99 more fire
        rule = api.get("/api/v1/rules/7").json()
        assert (rule["firings"], rule["suppressed"]) == (100, 51)
        assert len(firings(api, "r")) == 101
    migrate(database_url, "0010", down=True)
    [rules, fired] = execute(database_url, "SELECT id FROM rules", "SELECT count(*) FROM rule_firings")
    assert rules == [(7,)] and fired == [(100,)]  # the suppressed count went with its column
    engine = make_engine(database_url)
    assert "max_firings" not in {c["name"] for c in sa.inspect(engine).get_columns("rules")}
    engine.dispose()
