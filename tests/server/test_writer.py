"""The log writer: posts that wait together are stored in one transaction, each still
exactly once, in the order they came; a post that is refused or fails takes no other post
down with it."""

from __future__ import annotations

import itertools
import json
import threading
from contextlib import contextmanager

import httpx
import msgspec
import psycopg
import pytest
from psycopg import pq
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from monitor_server.config import Settings
from monitor_server.domain.errors import Invalid, NotFound
from monitor_server.domain.records import Record
from monitor_server.infra import writer as writer_module
from monitor_server.infra.pgbus import libpq_url
from monitor_server.infra.writer import LogWriter, slices
from monitor_server.store.logs import Post
from tests.support.api import create_run, make_records, post_logs
from tests.support.databases import clean_postgres, needs_postgres
from tests.support.servers import ServerProcess, serve
from tests.support.waiting import wait_for


def records(n: int, start: int = 0, metrics=("loss", "accuracy")) -> list[Record]:
    return [msgspec.convert(r, Record) for r in make_records(n, start, metrics=metrics)]


@pytest.fixture
def commits(server):
    """Counts the transactions the log writer commits on the server's database."""
    count = [0]

    def on_commit(_conn):
        if threading.current_thread().name == "fitwatch-log-writer":
            count[0] += 1

    engine = server.app.state.engine
    event.listen(engine, "commit", on_commit)
    yield count
    event.remove(engine, "commit", on_commit)


def batch_writer(server) -> LogWriter:
    return LogWriter(server.app.state.engine, server.settings)


def points(api, run_id: str, name: str = "loss") -> list[int]:
    response = api.get(f"/api/v1/runs/{run_id}/series/batch/{name}", params={"max_points": 100_000})
    assert response.status_code == 200, response.text
    return response.json()["steps"]


@pytest.fixture
def server(start_server):
    return start_server(max_series_per_run=3)


def test_posts_waiting_together_share_one_transaction_and_are_each_answered(server, api, commits):
    for i in range(10):
        create_run(api, f"r{i}")
    create_run(api, "capped")
    writer = batch_writer(server)
    futures = [writer.submit(Post(f"r{i}", records(20 + i))) for i in range(10)]
    unknown = writer.submit(Post("nobody", records(5)))
    capped = writer.submit(Post("capped", records(5, metrics=("a", "b", "c", "d"))))
    again = writer.submit(Post("r0", records(30)))  # the same run: stored after the first, not with it
    ledger_reads = []

    def on_execute(_conn, _cursor, statement, *_):
        if statement.lstrip().startswith("SELECT") and "FROM received" in statement:
            ledger_reads.append(statement)

    event.listen(server.app.state.engine, "before_cursor_execute", on_execute)
    try:
        writer.start()
        writer.stop()
    finally:
        event.remove(server.app.state.engine, "before_cursor_execute", on_execute)

    assert commits[0] == 2  # one for the twelve posts of distinct runs, one for r0's second
    assert len(ledger_reads) == 2  # the duplicate check: one query a batch, not one a post
    for i, future in enumerate(futures):
        stored = future.result()
        assert (len(stored.accepted), stored.duplicates) == (20 + i, 0)
        assert points(api, f"r{i}") == list(range(30 if i == 0 else 20 + i))
    assert (len(again.result().accepted), again.result().duplicates) == (10, 20)
    with pytest.raises(NotFound):
        unknown.result()
    with pytest.raises(Invalid, match="over the limit of 3"):
        capped.result()
    # The refused post left no trace: its seqs are new to the run, it has no series.
    assert api.get("/api/v1/runs/capped/series").json() == []
    response = post_logs(api, "capped", make_records(5, metrics=("a", "b")))
    assert response.json()["accepted"] == 5


def test_a_post_that_fails_is_found_and_the_others_of_its_batch_are_stored(server, api, commits, monkeypatch):
    for run_id in ("a", "bad", "c"):
        create_run(api, run_id)
    real = writer_module.ingest_many

    def failing_for_bad(conn, posts, now, settings, **kwargs):
        if any(post.run_id == "bad" for post in posts):
            raise RuntimeError("the database refused it")
        return real(conn, posts, now, settings, **kwargs)

    monkeypatch.setattr(writer_module, "ingest_many", failing_for_bad)
    writer = batch_writer(server)
    futures = {run_id: writer.submit(Post(run_id, records(8))) for run_id in ("a", "bad", "c")}
    writer.start()
    writer.stop()

    assert commits[0] == 2  # the batch rolled back, then each post alone: two committed
    assert len(futures["a"].result().accepted) == 8
    assert len(futures["c"].result().accepted) == 8
    with pytest.raises(RuntimeError, match="refused"):
        futures["bad"].result()
    assert points(api, "a") == points(api, "c") == list(range(8))
    assert api.get("/api/v1/runs/bad/series").json() == []


def wide_records(n: int, start: int = 0) -> list[dict]:
    """Records that each bring two new names, as a per-sample logging bug logs."""
    return [
        {"seq": i, "scope": "batch", "step": i, "wall_time": 1.0 + i, "metrics": {f"x{i}": i, f"y{i}": -i}}
        for i in range(start, start + n)
    ]


@pytest.fixture
def batches(monkeypatch):
    """The run ids and record counts of every batch the writers store, in order."""
    seen: list[list[tuple[str, int]]] = []
    real = writer_module.ingest_many

    def spy(conn, posts, now, settings, **kwargs):
        seen.append([(post.run_id, len(post.records)) for post in posts])
        return real(conn, posts, now, settings, **kwargs)

    monkeypatch.setattr(writer_module, "ingest_many", spy)
    return seen


def test_a_big_post_is_stored_in_parts_and_other_runs_are_stored_between_them(start_server, batches):
    """4,000 new names would hold the writer, and every run's post behind it, for the whole
    post: it goes in parts of bounded cost, and a post that came meanwhile is stored before
    the post's last part."""
    server = start_server()
    writer = server.app.state.writer
    small: list = []

    def first_part_stored(conn):  # another run's post arrives while the big one is stored
        if threading.current_thread().name == "fitwatch-log-writer" and not small:
            small.append(writer.submit(Post("small", records(5))))

    with server.client() as api:
        create_run(api, "wide")
        create_run(api, "small")
        event.listen(server.app.state.engine, "commit", first_part_stored)
        try:
            response = post_logs(api, "wide", wide_records(2000))
        finally:
            event.remove(server.app.state.engine, "commit", first_part_stored)
        assert response.json() == {"accepted": 2000, "duplicates": 0, "commands": []}
        assert len(api.get("/api/v1/runs/wide/series").json()) == 4000
        assert len(small[0].result().accepted) == 5

    wide = [k for k, batch in enumerate(batches) if any(run_id == "wide" for run_id, _ in batch)]
    parts = [n for batch in batches for run_id, n in batch if run_id == "wide"]
    assert len(parts) >= 3 and sum(parts) == 2000  # in order, each record once
    most = writer_module.SLICE_COST // (1 + 2 * writer_module.NAME_COST)  # a part's cost bounds its records
    assert max(parts) <= most + 1, parts
    [stored_small] = [k for k, batch in enumerate(batches) if ("small", 5) in batch]
    assert stored_small < wide[-1]


def test_a_big_post_past_the_series_limit_is_refused_whole_by_its_first_part(start_server, batches):
    """Each part alone fits under the limit; the first part is judged with all the names."""
    server = start_server(max_series_per_run=3000)
    with server.client() as api:
        create_run(api, "r")
        response = post_logs(api, "r", wide_records(2000))
        assert response.status_code == 422
        assert "has 0 series and this post adds 4000 new names" in response.json()["detail"]
        assert api.get("/api/v1/runs/r/series").json() == []
    assert [run_id for batch in batches for run_id, _ in batch] == ["r"]  # no later part was sent


@pytest.fixture
def second_batch_fails_once(monkeypatch):
    """The writers' second batch fails as a full disk fails it; the others are stored."""
    real = writer_module.ingest_many
    calls = [0]

    def failing(conn, posts, now, settings, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise OperationalError("INSERT", {}, Exception("the disk is full"))
        return real(conn, posts, now, settings, **kwargs)

    monkeypatch.setattr(writer_module, "ingest_many", failing)


def test_a_big_post_retried_after_a_part_failed_stores_each_record_once(start_server, second_batch_fails_once):
    server = start_server()
    with server.client() as api:
        create_run(api, "r")
        body = wide_records(2000)
        assert post_logs(api, "r", body).status_code == 503
        stored = len(api.get("/api/v1/runs/r/series").json()) // 2
        assert 0 < stored < 2000  # the first part was committed
        again = post_logs(api, "r", body).json()
        assert (again["accepted"], again["duplicates"]) == (2000 - stored, stored)
        counts = {s["name"]: s["count"] for s in api.get("/api/v1/runs/r/series").json()}
        assert len(counts) == 4000 and set(counts.values()) == {1}


def test_a_retry_whose_first_parts_were_stored_is_still_judged_by_the_series_limit(
    start_server, second_batch_fails_once
):
    """The first part was stored, a later one failed; by the retry the limit was lowered.
    The retry's first part is all duplicates: the next part still carries the names of
    itself and the parts after it, and the request is refused there."""
    body = wide_records(2000)
    with start_server().client() as api:
        create_run(api, "r")
        assert post_logs(api, "r", body).status_code == 503
        stored = len(api.get("/api/v1/runs/r/series").json())
    assert 0 < stored < 3000
    with start_server(max_series_per_run=3000).client() as api:
        response = post_logs(api, "r", body)
        assert response.status_code == 422, response.text
        assert f"has {stored} series" in response.json()["detail"]
        assert len(api.get("/api/v1/runs/r/series").json()) == stored


@needs_postgres
def test_a_post_after_the_database_dropped_the_writers_connection_is_stored_at_first_try(pg_database):
    """The writer keeps its connection between batches; when the database drops it (a
    restart, an idle timeout), the next post is stored on a new one, not refused."""
    clean_postgres(pg_database)
    with serve(Settings(database_url=pg_database)) as server, server.client() as api:
        create_run(api, "r")
        assert post_logs(api, "r", make_records(5)).json()["accepted"] == 5
        with psycopg.connect(libpq_url(pg_database), autocommit=True) as admin:
            others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            dropped = [pid for (pid,) in admin.execute(f"SELECT pid {others}")]
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (dropped,))
            gone = f"SELECT count(*) = 0 {others} AND pid = ANY(%s)"
            wait_for(lambda: admin.execute(gone, (dropped,)).fetchone()[0], what="the dropped connections to end")
        assert dropped
        response = post_logs(api, "r", make_records(5, start=5))
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 5
        assert points(api, "r") == list(range(10))


@needs_postgres
def test_a_batch_on_postgresql_costs_three_round_trips(pg_database, monkeypatch):
    """Every read a batch needs (runs, ledger, series, rules, the chunks it grows, the
    commands to hand over) goes in one pipeline, every write in another, then the commit.
    A round trip waits on the database and then, under load, for the interpreter lock."""
    clean_postgres(pg_database)
    with serve(Settings(database_url=pg_database)) as server, server.client() as api:
        for run_id in ("a", "b", "c"):
            create_run(api, run_id)
            post_logs(api, run_id, make_records(5))  # series and their first chunks exist
        command = api.post("/api/v1/runs/b/commands", json={"type": "checkpoint"}).json()
        assert [c["id"] for c in post_logs(api, "b", make_records(1, start=5)).json()["commands"]] == [command["id"]]

        trips: list[str] = []
        engine = server.app.state.engine
        real_pipeline = psycopg.Connection.pipeline

        @contextmanager
        def pipeline(self):
            with real_pipeline(self) as p:
                yield p
            if threading.current_thread().name == "fitwatch-log-writer":
                trips.append("pipeline")

        def on_execute(conn, _cursor, statement, *_):
            in_pipeline = conn.connection.driver_connection.pgconn.pipeline_status != pq.PipelineStatus.OFF
            if threading.current_thread().name == "fitwatch-log-writer" and not in_pipeline:
                trips.append(statement)

        def on_commit(_conn):
            if threading.current_thread().name == "fitwatch-log-writer":
                trips.append("commit")

        writer = batch_writer(server)
        futures = {run_id: writer.submit(Post(run_id, records(10, start=10))) for run_id in ("a", "b", "c")}
        monkeypatch.setattr(psycopg.Connection, "pipeline", pipeline)
        event.listen(engine, "before_cursor_execute", on_execute)
        event.listen(engine, "commit", on_commit)
        try:
            writer.start()
            writer.stop()
        finally:
            event.remove(engine, "before_cursor_execute", on_execute)
            event.remove(engine, "commit", on_commit)

        assert trips == ["pipeline", "pipeline", "commit"]
        assert [len(f.result().accepted) for f in futures.values()] == [10, 10, 10]
        assert [c.id for c in futures["b"].result().commands] == [command["id"]]  # delivered, not acknowledged
        assert futures["a"].result().commands == []
        assert points(api, "a") == [*range(5), *range(10, 20)]


def many_series_records(n: int, names: int = 100) -> list[dict]:
    """`n` records of `names` series each: a post of `n * names` points, stored in parts."""
    metrics = [f"m{k:02d}" for k in range(names)]
    return [
        {
            "seq": i,
            "scope": "batch",
            "step": i,
            "wall_time": 1.0 + i,
            "metrics": {m: (i + k) % 8 / 4 for k, m in enumerate(metrics)},
        }
        for i in range(n)
    ]


def stored_count(url: str) -> int:
    """How many records of the post are stored: each logs to every series."""
    try:
        listed = httpx.get(f"{url}/api/v1/runs/r/series", timeout=30).json()
    except httpx.HTTPError:
        return 0
    return max((s["count"] for s in listed), default=0)


@pytest.mark.slow
def test_a_post_killed_midway_keeps_whole_parts_and_its_retry_stores_the_rest_once(database_url):
    """SIGKILL while a 10,000-record post is stored: what stays is the parts committed
    before it, whole and in order (a prefix by seq); the retry stores the rest, each record
    once."""
    body = many_series_records(10_000)
    ends = list(itertools.accumulate(len(p.records) for p in slices("r", [msgspec.convert(r, Record) for r in body])))
    assert len(ends) > 5
    first = ServerProcess(database_url).start()
    try:
        with httpx.Client(base_url=first.url, timeout=120) as api:
            create_run(api, "r")
        sending = threading.Thread(target=_post_ignoring_errors, args=(first.url, body))
        sending.start()
        wait_for(lambda: stored_count(first.url) > 0, 120, "the first part")
        first.kill()
        sending.join()
    finally:
        first.kill()
    second = ServerProcess(database_url).start()
    try:
        with httpx.Client(base_url=second.url, timeout=120) as api:
            kept = exported(api)
            n = len(kept)
            assert n in ends[:-1], (n, ends)  # whole parts, killed before the last
            assert kept == [as_exported(r) for r in body[:n]]  # the first n records, each whole
            assert {s["count"] for s in api.get("/api/v1/runs/r/series").json()} == {n}
            answer = api.post("/api/v1/runs/r/logs", json={"records": body}).json()
            assert (answer["accepted"], answer["duplicates"]) == (len(body) - n, n)
            assert exported(api) == [as_exported(r) for r in body]
    finally:
        second.kill()


def _post_ignoring_errors(url: str, body: list[dict]) -> None:
    try:
        httpx.post(f"{url}/api/v1/runs/r/logs", json={"records": body}, timeout=120)
    except httpx.HTTPError:
        pass  # the server was killed under it


def exported(api: httpx.Client) -> list[dict]:
    response = api.get("/api/v1/runs/r/export.jsonl")
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def as_exported(record: dict) -> dict:
    return {**record, "epoch": None}
