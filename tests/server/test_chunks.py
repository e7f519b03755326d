"""Chunks keep every bit of their points, whatever the values, and on PostgreSQL a
training's steps, seqs, epochs and wall times cost a fraction of their raw bytes."""

from __future__ import annotations

import numpy as np
from sqlalchemy import insert, select, text

from monitor_server.config import Settings
from monitor_server.domain.schemas import RunCreate
from monitor_server.infra.db import make_engine, writing
from monitor_server.migrations import upgrade
from monitor_server.store import chunks
from monitor_server.store.runs import create_run as create_run_row
from monitor_server.store.sql import fetching
from monitor_server.store.tables import series as series_table
from tests.support.api import create_run, make_records, post_logs
from tests.support.databases import fresh_pg_database, needs_postgres
from tests.support.servers import serve

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


def test_a_post_finds_the_chunk_it_grows_in_a_few_steps_however_many_chunks_a_series_has(database_url):
    """A million points streamed a few at a time make 4,000 chunks a series. A post reads
    the newest chunk of each series it logs to: one index probe, not a visit of every chunk
    (on PostgreSQL that took 70 ms a post for 100 such series). Counted: the pages
    PostgreSQL reads, and the instructions SQLite's engine runs."""
    engine = make_engine(database_url)
    upgrade(engine)
    many = 5000
    with writing(engine) as conn:
        create_run_row(conn, RunCreate(id="r"), 0.0)
        conn.execute(
            insert(series_table),
            [dict(run_id="r", scope="batch", name=n, count=0, first_step=0, last_step=0, last_seq=0) for n in "ab"],
        )
        ids = dict(conn.execute(select(series_table.c.name, series_table.c.id)).all())
        blank = dict(nonfinite=0, steps=b"", seqs=b"", epochs=b"", walls=b"", vals=b"", encoding=chunks.DELTAS)
        # b's chunks come after a's: a's newest is neither the table's last row nor one of few.
        rows = [
            dict(series_id=ids[n], first_step=k, last_step=k, count=chunks.GROW, **blank)
            for n in "ab"
            for k in range(many)
        ]
        rows[many - 1]["count"] = 100  # a's newest chunk can grow; b's is full
        conn.execute(insert(chunks.chunks), rows)

    def read_tails(conn):
        with fetching(conn) as fetch:
            found = chunks.small_tails(fetch, ["r"], {("batch", "a"), ("batch", "b")})
        return chunks.tails_by_series(found)

    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")  # as on a database too big to scan
            query = chunks.SMALL_TAILS.params(run_ids=["r"], scopes=["batch"], names=["a", "b"])
            sql = query.compile(conn, compile_kwargs={"literal_binds": True, "render_postcompile": True})
            [plan] = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}").scalar()
            work = plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"]
        else:
            steps = []
            conn.connection.driver_connection.set_progress_handler(lambda: steps.append(1), 10)
            tails = read_tails(conn)
            conn.connection.driver_connection.set_progress_handler(None, 10)
            work = len(steps)
        tails = read_tails(conn)
    engine.dispose()
    assert [(sid, row.first_step, row.count) for sid, row in tails.items()] == [(ids["a"], many - 1, 100)]
    assert work < 40, work  # 14 pages, 9 (x10) instructions; a visit of every chunk: 84 and 5,009
