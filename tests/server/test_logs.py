"""Log ingest: exactly once per (run, seq), one transaction per request, non-finite values
kept, and every kind of bad input refused with a 4xx and nothing stored."""

from __future__ import annotations

import json
import logging
import socket
import threading

import pytest
from sqlalchemy import text

from tests.support.api import JSON, assert_error, create_run, make_records, post_logs
from tests.support.waiting import wait_for


def count(api, run_id="r", scope="batch", name="loss"):
    response = api.get(f"/api/v1/runs/{run_id}/series/{scope}/{name}", params={"max_points": 200_000})
    return response.json()["count"] if response.status_code == 200 else 0


def test_batch_is_stored_and_points_read_back(api):
    create_run(api, "r")
    records = make_records(20)
    assert post_logs(api, "r", records).json() == {"accepted": 20, "duplicates": 0, "commands": []}
    data = api.get("/api/v1/runs/r/series/batch/loss").json()
    assert data["steps"] == list(range(20))
    assert data["values"] == [r["metrics"]["loss"] for r in records]
    assert data["wall_times"] == [r["wall_time"] for r in records]


def test_retried_batch_is_stored_once(api):
    create_run(api, "r")
    records = make_records(100)
    post_logs(api, "r", records)
    assert post_logs(api, "r", records).json() == {"accepted": 0, "duplicates": 100, "commands": []}
    assert count(api) == 100


def test_overlapping_batch_stores_only_new_records(api):
    create_run(api, "r")
    post_logs(api, "r", make_records(60))
    answer = post_logs(api, "r", make_records(60, start=40)).json()
    assert (answer["accepted"], answer["duplicates"]) == (40, 20)
    assert count(api) == 100
    series = {s["name"]: s for s in api.get("/api/v1/runs/r/series").json()}
    assert series["loss"]["count"] == 100 and series["loss"]["last_step"] == 99


def test_same_seq_twice_in_one_request_counts_once(api):
    create_run(api, "r")
    records = make_records(3)
    answer = post_logs(api, "r", [*records, records[1]]).json()
    assert (answer["accepted"], answer["duplicates"]) == (3, 1)


def test_seq_is_per_run(api):
    create_run(api, "a")
    create_run(api, "b")
    assert post_logs(api, "a", make_records(10)).json()["accepted"] == 10
    assert post_logs(api, "b", make_records(10)).json()["accepted"] == 10


def test_nonfinite_tokens_and_strings_are_stored_and_returned_as_strings(api):
    create_run(api, "r")
    metrics = [float("nan"), float("inf"), float("-inf"), "NaN", "Infinity", "-Infinity", 1.5, 2]
    records = [
        {"seq": i, "scope": "batch", "step": i, "wall_time": 1.0, "metrics": {"loss": v}} for i, v in enumerate(metrics)
    ]
    # Python's json writes the bare tokens NaN, Infinity, -Infinity, as a Keras client would.
    response = api.post("/api/v1/runs/r/logs", content=json.dumps({"records": records}), headers=JSON)
    assert response.json()["accepted"] == 8
    data = api.get("/api/v1/runs/r/series/batch/loss").json()
    assert data["values"] == ["NaN", "Infinity", "-Infinity", "NaN", "Infinity", "-Infinity", 1.5, 2.0]
    info = api.get("/api/v1/runs/r/series").json()[0]
    assert (info["min"], info["max"], info["last_value"]) == (1.5, 2.0, 2.0)


def test_records_without_epoch_and_with_empty_metrics(api):
    create_run(api, "r")
    records = [
        {"seq": 0, "scope": "eval", "step": 0, "wall_time": 5, "metrics": {"loss": 0.25}},
        {"seq": 1, "scope": "eval", "step": 1, "wall_time": 6, "metrics": {}},
    ]
    assert post_logs(api, "r", records).json()["accepted"] == 2
    assert api.get("/api/v1/runs/r/series/eval/loss").json()["values"] == [0.25]


def test_log_answer_carries_unacknowledged_commands_and_marks_them_delivered(api):
    create_run(api, "r")
    command = api.post("/api/v1/runs/r/commands", json={"type": "set_lr", "args": {"value": 0.001}}).json()
    answer = post_logs(api, "r", make_records(1)).json()
    assert [(c["id"], c["type"], c["status"]) for c in answer["commands"]] == [(command["id"], "set_lr", "delivered")]
    # Delivered but not acknowledged: it rides on the next answer too.
    assert [c["id"] for c in post_logs(api, "r", make_records(1, start=1)).json()["commands"]] == [command["id"]]
    api.post(f"/api/v1/runs/r/commands/{command['id']}/ack", json={"status": "applied"})
    assert post_logs(api, "r", make_records(1, start=2)).json()["commands"] == []


BAD_RECORDS = {
    "wrong type for seq": {"seq": "1", "scope": "batch", "step": 0, "wall_time": 1, "metrics": {}},
    "float seq": {"seq": 1.5, "scope": "batch", "step": 0, "wall_time": 1, "metrics": {}},
    "negative step": {"seq": 1, "scope": "batch", "step": -1, "wall_time": 1, "metrics": {}},
    "unknown scope": {"seq": 1, "scope": "minute", "step": 0, "wall_time": 1, "metrics": {}},
    "non-numeric value": {"seq": 1, "scope": "batch", "step": 0, "wall_time": 1, "metrics": {"loss": "high"}},
    "numeric string": {"seq": 1, "scope": "batch", "step": 0, "wall_time": 1, "metrics": {"loss": "1.5"}},
    "boolean value": {"seq": 1, "scope": "batch", "step": 0, "wall_time": 1, "metrics": {"loss": True}},
    "null value": {"seq": 1, "scope": "batch", "step": 0, "wall_time": 1, "metrics": {"loss": None}},
    "nested value": {"seq": 1, "scope": "batch", "step": 0, "wall_time": 1, "metrics": {"loss": [1]}},
    "missing wall_time": {"seq": 1, "scope": "batch", "step": 0, "metrics": {}},
    "empty metric name": {"seq": 1, "scope": "batch", "step": 0, "wall_time": 1, "metrics": {"": 1}},
    "seq beyond int64": {"seq": 2**63, "scope": "batch", "step": 0, "wall_time": 1, "metrics": {}},
    "metrics not an object": {"seq": 1, "scope": "batch", "step": 0, "wall_time": 1, "metrics": [1]},
    "boolean seq": {"seq": True, "scope": "batch", "step": 0, "wall_time": 1, "metrics": {}},
    "wall_time as text": {"seq": 1, "scope": "batch", "step": 0, "wall_time": "1.0", "metrics": {}},
    "epoch beyond int32": {"seq": 1, "scope": "batch", "step": 0, "epoch": 2**31, "wall_time": 1, "metrics": {}},
    "unknown field": {"seq": 1, "scope": "batch", "step": 0, "wall_time": 1, "metrics": {}, "loss": 1},
    "NUL in a metric name": {"seq": 1, "scope": "batch", "step": 0, "wall_time": 1, "metrics": {"lo\x00ss": 1}},
    "metric name over 200": {"seq": 1, "scope": "batch", "step": 0, "wall_time": 1, "metrics": {"x" * 201: 1}},
    "over 1000 metrics": {
        "seq": 1,
        "scope": "batch",
        "step": 0,
        "wall_time": 1,
        "metrics": {f"m{i}": 1 for i in range(1001)},
    },
}


@pytest.mark.parametrize("bad", list(BAD_RECORDS.values()), ids=list(BAD_RECORDS))
def test_bad_record_rejects_the_whole_batch(api, bad):
    create_run(api, "r")
    detail = assert_error(post_logs(api, "r", [*make_records(5), bad]), 422)
    assert detail[0]["loc"][:3] == ["body", "records", 5]
    assert count(api) == 0
    # The server keeps serving, and the same records go in once the bad one is gone.
    assert post_logs(api, "r", make_records(5)).json()["accepted"] == 5


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[]", b'{"records": {}}', b'{"records": [1]}', b'{"rows": []}', b'{"records": [], "x": 1}'],
)
def test_malformed_bodies_are_4xx(api, body):
    create_run(api, "r")
    response = api.post("/api/v1/runs/r/logs", content=body, headers=JSON)
    assert response.status_code in (400, 422)
    assert_error(response, response.status_code)


def test_what_the_schema_allows_beyond_plain_json_is_stored_as_meant(api):
    """Integers written as integral floats, and values the client writes as bare tokens."""
    create_run(api, "r")
    body = b'{"records": [{"seq": 252.0, "scope": "batch", "step": 1e3, "epoch": 2.0, "wall_time": 5, "metrics": {"loss": NaN, "lr": 1e999}}]}'
    assert api.post("/api/v1/runs/r/logs", content=body, headers=JSON).json()["accepted"] == 1
    loss = api.get("/api/v1/runs/r/series/batch/loss").json()
    assert (loss["steps"], loss["values"], loss["wall_times"]) == ([1000], ["NaN"], [5.0])
    assert api.get("/api/v1/runs/r/series/batch/lr").json()["values"] == ["Infinity"]
    assert post_logs(api, "r", [{**make_records(1)[0], "seq": 252}]).json()["duplicates"] == 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"records": [{"seq": 1, "scope": "batch", "step": 1, "wall_time": 1, "metrics": {"loss": 1'
        + b"0" * 400
        + b"}}]}",
        b'{"records": [{"seq": 1, "scope": "batch", "step": 1, "wall_time": 1e999, "metrics": {}}]}',
        b'{"records": [{"seq": 1, "scope": "batch", "step": 1, "wall_time": 1' + b"0" * 400 + b', "metrics": {}}]}',
        b'{"records": [{"seq": 1, "scope": "batch", "step": 1, "wall_time": 1, "metrics": {"\xe9": 1}}]}',
        b'{"records": [{"seq": 1, "scope": "batch", "step": 1, "wall_time": 1, "metrics": {"\\ud800": 1}}]}',
    ],
    ids=[
        "integer value past float range",
        "infinite wall_time",
        "integer wall_time past float range",
        "not UTF-8",
        "lone surrogate",
    ],
)
def test_numbers_and_text_past_what_can_be_stored_are_4xx(api, body):
    create_run(api, "r")
    response = api.post("/api/v1/runs/r/logs", content=body, headers=JSON)
    assert response.status_code in (400, 422)
    assert_error(response, response.status_code)
    assert api.get("/api/v1/runs/r/series").json() == []


def test_malformed_json_is_400(api):
    create_run(api, "r")
    assert_error(api.post("/api/v1/runs/r/logs", content=b'{"records": [', headers=JSON), 400)


def test_unknown_and_bad_run_ids(api):
    assert_error(post_logs(api, "nope", make_records(1)), 404)
    assert_error(post_logs(api, "bad$id", make_records(1)), 422)


def test_more_than_10000_records_is_refused(api):
    create_run(api, "r")
    assert_error(post_logs(api, "r", make_records(10_001, metrics=("loss",))), 422)
    assert count(api) == 0
    assert post_logs(api, "r", make_records(10_000, metrics=("loss",))).json()["accepted"] == 10_000


def test_body_over_16_mib_is_413(api):
    create_run(api, "r")
    body = b'{"records": [], "pad": "' + b"x" * (16 * 1024 * 1024) + b'"}'
    assert_error(api.post("/api/v1/runs/r/logs", content=body, headers=JSON), 413)
    # Without a Content-Length (chunked), the body is counted as it arrives.
    chunks = (body[i : i + 1 << 20] for i in range(0, len(body), 1 << 20))
    assert_error(api.post("/api/v1/runs/r/logs", content=chunks, headers=JSON), 413)
    assert api.get("/healthz").status_code == 200


def test_concurrent_writers_do_not_fail(server):
    """Eight threads writing to four runs at once: no "database is locked", nothing lost."""
    runs = [f"run{i}" for i in range(4)]
    with server.client() as api:
        for run_id in runs:
            create_run(api, run_id)
    errors: list[str] = []

    def writer(run_id: str, offset: int) -> None:
        with server.client() as api:
            for batch in range(10):
                start = offset + batch * 50
                response = post_logs(api, run_id, make_records(50, start=start))
                if response.status_code != 200:
                    errors.append(response.text)

    threads = [threading.Thread(target=writer, args=(run_id, part * 10_000)) for run_id in runs for part in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with server.client() as api:
        assert [count(api, run_id) for run_id in runs] == [1000] * 4


def test_concurrent_retries_of_one_batch_store_it_once(server):
    with server.client() as api:
        create_run(api, "r")
    records = make_records(500)
    answers: list[dict] = []

    def send() -> None:
        with server.client() as api:
            answers.append(post_logs(api, "r", records).json())

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a["accepted"] for a in answers) == [0, 0, 0, 0, 0, 500]
    with server.client() as api:
        assert count(api) == 500


def test_at_a_repeated_step_the_point_logged_last_is_the_last_value(api):
    """A resumed run logs a step again from a new writer, whose seqs may be smaller."""
    create_run(api, "r")
    first = {"seq": 9 << 32, "scope": "epoch", "step": 5, "epoch": 5, "wall_time": 1000.0, "metrics": {"loss": 1.0}}
    again = {**first, "seq": 3 << 32, "wall_time": 2000.0, "metrics": {"loss": 0.5}}
    post_logs(api, "r", [first])
    post_logs(api, "r", [again])
    assert api.get("/api/v1/runs/r").json()["latest"] == {"loss": 0.5}
    [info] = api.get("/api/v1/runs/r/series").json()
    assert info["last_value"] == 0.5 and info["count"] == 2
    # In one batch too, whatever the order of the records in it.
    post_logs(api, "r", [{**again, "seq": 5 << 32, "wall_time": 4000.0, "metrics": {"loss": 0.25}},
                         {**again, "seq": 7 << 32, "wall_time": 3000.0, "metrics": {"loss": 0.75}}])  # fmt: skip
    assert api.get("/api/v1/runs/r").json()["latest"] == {"loss": 0.25}


def test_a_post_past_the_series_limit_is_refused_whole(start_server):
    server = start_server(max_series_per_run=5)
    with server.client() as api:
        create_run(api, "r")
        assert post_logs(api, "r", make_records(2, metrics=("a", "b", "c"))).status_code == 200
        past = make_records(2, start=2, metrics=("a", "b", "d", "e", "f"))
        detail = assert_error(post_logs(api, "r", past), 422)
        assert "has 3 series and this post adds 3 new names" in detail and "limit of 5" in detail
        assert sorted(s["name"] for s in api.get("/api/v1/runs/r/series").json()) == ["a", "b", "c"]
        assert post_logs(api, "r", past).status_code == 422  # nothing of it was stored, not even its seqs
        assert post_logs(api, "r", make_records(2, start=2, metrics=("a", "d", "e"))).json()["accepted"] == 2
        assert len(api.get("/api/v1/runs/r/series").json()) == 5


def test_a_run_past_a_lowered_series_limit_still_logs_to_its_series(start_server):
    with start_server(max_series_per_run=5).client() as api:
        create_run(api, "r")
        assert post_logs(api, "r", make_records(2, metrics=("a", "b", "c", "d"))).status_code == 200
    with start_server(max_series_per_run=3).client() as api:
        assert post_logs(api, "r", make_records(2, start=2, metrics=("a", "d"))).json()["accepted"] == 2
        detail = assert_error(post_logs(api, "r", make_records(1, start=4, metrics=("a", "e"))), 422)
        assert "has 4 series and this post adds 1 new names" in detail


def test_thousands_of_new_series_cost_a_few_statements(server, api):
    """A per-sample logging bug brings thousands of new names in one post: they are made a
    few statements a part of the post (here three parts, see `writer.slices`), not one
    statement each."""
    from sqlalchemy import event

    create_run(api, "r")
    statements = []
    engine = server.app.state.engine
    count = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", count)
    try:
        records = [
            {"seq": i, "scope": "batch", "step": i, "wall_time": 1.0, "metrics": {f"m{i}_{k}": k for k in range(1000)}}
            for i in range(3)
        ]
        assert post_logs(api, "r", records).json()["accepted"] == 3
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(api.get("/api/v1/runs/r/series").json()) == 3000
    assert len(statements) < 60, statements
    assert api.get("/api/v1/runs/r/series/batch/m2_999").json()["values"] == [999.0]


def test_points_are_kept_in_chunks_and_seqs_in_ranges(server, api):
    """A post writes a chunk per series, not a row per point; small posts grow the latest
    chunk; the ledger of seqs holds a row per gap, not per record."""
    create_run(api, "r")

    def post(seqs) -> None:
        records = [
            {"seq": s, "scope": "batch", "step": s, "wall_time": 1.0 + s, "metrics": {"a": s, "b": -s}} for s in seqs
        ]
        assert post_logs(api, "r", records).json()["accepted"] == len(records)

    def rows(table: str) -> int:
        with server.app.state.engine.connect() as conn:
            return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()

    for start in range(0, 50, 5):  # ten small posts: one chunk a series
        post(range(start, start + 5))
    assert (rows("chunks"), rows("received")) == (2, 1)
    post(range(50, 3050))  # a small chunk takes a large post, up to its size limit
    assert rows("chunks") == 2
    post(range(4000, 4010))  # after a gap in the seqs: a range more; a chunk of 3,050 is not small
    assert (rows("chunks"), rows("received")) == (4, 2)
    post(range(5000, 10000))  # the small chunk takes 4,086 of them, a new one the rest
    assert (rows("chunks"), rows("received")) == (6, 3)
    series = api.get("/api/v1/runs/r/series/batch/b", params={"max_points": 10**4}).json()
    assert series["steps"] == [*range(3050), *range(4000, 4010), *range(5000, 10000)]
    assert series["values"] == [-s for s in series["steps"]]


def test_samples_of_the_process_and_machine_are_a_scope_of_their_own(api):
    create_run(api, "r")
    samples = [
        {"seq": i, "scope": "system", "step": i, "wall_time": 100.0 + 10 * i, "metrics": {"cpu_percent": 50.0 + i}}
        for i in range(3)
    ]
    assert post_logs(api, "r", samples).json()["accepted"] == 3
    [info] = api.get("/api/v1/runs/r/series").json()
    assert (info["scope"], info["name"], info["count"]) == ("system", "cpu_percent", 3)
    body = api.get("/api/v1/runs/r/series/system/cpu_percent").json()
    assert (body["steps"], body["values"]) == ([0, 1, 2], [50.0, 51.0, 52.0])


def test_a_client_that_leaves_in_the_middle_of_its_body_is_one_info_line(server, api, caplog):
    create_run(api, "r")
    body = json.dumps({"records": make_records(100)}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    logged = lambda: [r for r in caplog.records if r.name == "uvicorn.error"]  # noqa: E731
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):  # the tests' servers log warnings only
        with socket.create_connection((host, int(port))) as raw:
            head = f"POST /api/v1/runs/r/logs HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            raw.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
        wait_for(logged, what="the server to log the lost client")
        assert api.get("/healthz").status_code == 200  # it carries on
    [record] = logged()
    assert record.levelno == logging.INFO and not record.exc_info, record.getMessage()
    assert "POST /api/v1/runs/r/logs" in record.getMessage() and "\n" not in record.getMessage()
    assert api.get("/api/v1/runs/r/series").json() == []  # half a body stored nothing
