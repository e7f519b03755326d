"""Chunks keep every bit of their points, whatever the values, and on PostgreSQL a
training's steps, seqs, epochs and wall times cost a fraction of their raw bytes."""

from __future__ import annotations

import numpy as np
from sqlalchemy import text

from monitor_server.config import Settings
from monitor_server.db import make_engine, writing
from monitor_server.migrations import upgrade
from monitor_server.store import chunks
from tests.conftest import fresh_pg_database, needs_postgres, serve
from tests.helpers import create_run, make_records, post_logs

I64 = np.iinfo(np.int64)


def test_a_chunk_gives_back_every_bit_of_its_points(database_url):
    """Differences are taken modulo 2**64, so extremes and sign changes come back exact."""
    points = chunks.Decoded(
        steps=np.array([I64.min, -1, 0, 1, 2**62, I64.max], np.int64),
        seqs=np.array([I64.max, 0, I64.min, 5, 3, 1], np.int64),
        epochs=np.array([-1, 0, 2**40, -1, 7, 3], np.int64),
        walls=np.array([np.inf, -0.0, np.nan, -1.7e308, 5e-324, 1.7e9]),
        vals=np.array([np.nan, -np.inf, np.inf, -0.0, 1e-310, 1.5]),
    )
    points.walls[2:3].view(np.uint64)[0] |= 0xDEAD  # a NaN with a payload
    engine = make_engine(database_url)
    upgrade(engine)
    with writing(engine) as conn:
        chunks.append(conn, np.full(len(points), 1), points, {})
    with engine.connect() as conn:
        found = chunks.overlapping(conn, 1, I64.min, I64.max)
        got = chunks.decode(conn, [c.id for c in found], I64.min, I64.max)
    engine.dispose()
    for want, have in zip(points, got):
        assert want.view(np.uint64).tolist() == have.view(np.uint64).tolist()


@needs_postgres
def test_postgresql_packs_a_trainings_steps_seqs_epochs_and_walls_to_a_fraction():
    with fresh_pg_database() as url:
        with serve(Settings(database_url=url)) as server, server.client() as api:
            create_run(api, "r")
            for start in range(0, 8192, 2048):
                assert post_logs(api, "r", make_records(2048, start, metrics=("loss",))).status_code == 200
        engine = make_engine(url)
        with engine.connect() as conn:
            stored, points = conn.execute(
                text(
                    "SELECT sum(pg_column_size(steps) + pg_column_size(seqs) + pg_column_size(epochs)"
                    " + pg_column_size(walls)), sum(count) FROM chunks"
                )
            ).one()
        engine.dispose()
    assert points == 8192
    assert stored / points < 1.0  # of 32 raw bytes a point (plain arrays through lz4: about 12)
