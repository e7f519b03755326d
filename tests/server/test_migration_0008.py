"""Migration 0008: runs made before it keep everything and start with no tags and no note;
a downgrade drops both and keeps the runs."""

from __future__ import annotations

import sqlalchemy as sa

from monitor_server.infra.db import make_engine
from tests.server.test_migration_0006 import database_url, migrate
from tests.support.api import create_run

__all__ = ["database_url"]  # the fixture: a database of its own at no revision


def test_old_runs_gain_empty_tags_and_note_and_the_downgrade_keeps_them(database_url, start_server):
    migrate(database_url, "0007")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO runs (id, name, project, status, config, created_at, updated_at, last_seen) "
                "VALUES ('old', 'before', 'p', 'finished', '{}', 1.0, 2.0, 3.0)"
            )
        )
    engine.dispose()
    with start_server().client() as api:  # migrates to the newest revision
        run = api.get("/api/v1/runs/old").json()
        assert (run["name"], run["status"], run["tags"], run["note"]) == ("before", "finished", [], "")
        create_run(api, "new")
        assert api.patch("/api/v1/runs/old", json={"tags": ["kept"], "note": "n"}).status_code == 200
        assert [r["id"] for r in api.get("/api/v1/runs", params={"tag": "kept"}).json()] == ["old"]
    migrate(database_url, "0007", down=True)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.text("SELECT id FROM runs")).scalars()) == ["new", "old"]
        assert "run_tags" not in sa.inspect(conn).get_table_names()
        assert "note" not in {c["name"] for c in sa.inspect(conn).get_columns("runs")}
    engine.dispose()
