"""Migration 0009: chunks written before it (plain arrays) and after it (differences) read
alike, a small old chunk grows into a differenced one, and a downgrade writes the
differenced chunks out as the plain arrays the older layout reads."""

from __future__ import annotations

import json

import numpy as np
import sqlalchemy as sa

from monitor_server.domain.schemas import encode_float
from monitor_server.infra.db import make_engine
from tests.server.test_migration_0006 import RUN, database_url, migrate, records
from tests.support.api import JSON, create_run

__all__ = ["database_url"]  # the fixture: a database of its own at no revision


def exported(api) -> list[dict]:
    response = api.get(f"/api/v1/runs/{RUN}/export.jsonl")
    assert response.status_code == 200, response.text
    return sorted((json.loads(line) for line in response.text.splitlines()), key=lambda r: r["seq"])


def as_sent(recs: list[dict]) -> list[dict]:
    return [{**r, "metrics": {k: encode_float(v) for k, v in r["metrics"].items()}} for r in recs]


def post(api, recs: list[dict]) -> None:
    body = json.dumps({"records": recs})  # NaN and Infinity as bare tokens
    assert api.post(f"/api/v1/runs/{RUN}/logs", content=body, headers=JSON).status_code == 200


def chunk_rows(url: str) -> list:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM chunks ORDER BY id")).all()
    engine.dispose()
    return rows


def test_chunks_of_both_layouts_read_alike_across_upgrade_and_downgrade(database_url, start_server):
    recs = records()  # NaN and ±Infinity, a step logged twice, 10,000 points of batch/loss
    first, rest = recs[:4196], recs[4196:]  # batch/loss: a full chunk and a small one of 100
    with start_server().client() as api:
        create_run(api, RUN)
        post(api, first)
        assert exported(api) == as_sent(first)

    migrate(database_url, "0008", down=True)  # the differenced chunks written out plain
    before = {}
    for row in chunk_rows(database_url):
        steps = np.frombuffer(row.steps, "<i8")
        assert (len(steps), steps[0], steps[-1]) == (row.count, row.first_step, row.last_step)
        assert np.all(np.diff(steps) >= 0)
        walls = np.frombuffer(row.walls, "<f8")
        assert np.all((walls > 1.6e9) & (walls < 1.8e9))
        before[row.id] = row
    assert sorted(row.count for row in before.values()) == [100, 420, 4096]  # loss: 4096 + 100; acc: 420

    with start_server().client() as api:  # migrates again: those chunks stay plain
        assert exported(api) == as_sent(first)
        post(api, rest)  # grows the small plain chunk
        assert exported(api) == as_sent(recs)
    after = {row.id: row for row in chunk_rows(database_url)}
    for chunk_id, old in before.items():
        new = after[chunk_id]
        if old.count == 100:  # the small one, grown and written differenced
            assert (new.count, new.encoding) == (4096, 1)
        else:
            assert (new.count, new.encoding, new.steps, new.walls) == (old.count, 0, old.steps, old.walls)
    assert all(row.encoding == 1 for chunk_id, row in after.items() if chunk_id not in before)
