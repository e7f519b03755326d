"""The log writer: posts that wait together are stored in one transaction, each still
exactly once, in the order they came; a post that is refused or fails takes no other post
down with it."""

from __future__ import annotations

import threading

import msgspec
import pytest
from sqlalchemy import event

from monitor_server import writer as writer_module
from monitor_server.errors import Invalid, NotFound
from monitor_server.records import Record
from monitor_server.store.logs import Post
from monitor_server.writer import LogWriter
from tests.helpers import create_run, make_records, post_logs


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
    writer.start()
    writer.stop()

    assert commits[0] == 2  # one for the twelve posts of distinct runs, one for r0's second
    for i, future in enumerate(futures):
        stored = future.result()
        assert (len(stored.result.accepted), stored.result.duplicates) == (20 + i, 0)
        assert points(api, f"r{i}") == list(range(30 if i == 0 else 20 + i))
    assert (len(again.result().result.accepted), again.result().result.duplicates) == (10, 20)
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

    def failing_for_bad(conn, posts, now, settings):
        if any(post.run_id == "bad" for post in posts):
            raise RuntimeError("the database refused it")
        return real(conn, posts, now, settings)

    monkeypatch.setattr(writer_module, "ingest_many", failing_for_bad)
    writer = batch_writer(server)
    futures = {run_id: writer.submit(Post(run_id, records(8))) for run_id in ("a", "bad", "c")}
    writer.start()
    writer.stop()

    assert commits[0] == 2  # the batch rolled back, then each post alone: two committed
    assert len(futures["a"].result().result.accepted) == 8
    assert len(futures["c"].result().result.accepted) == 8
    with pytest.raises(RuntimeError, match="refused"):
        futures["bad"].result()
    assert points(api, "a") == points(api, "c") == list(range(8))
    assert api.get("/api/v1/runs/bad/series").json() == []
