"""Exports: CSVLogger-layout CSV and JSONL that round-trips into a new run."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sqlite3

import httpx
import psycopg
from sqlalchemy import make_url

from monitor_server.infra.pgbus import libpq_url
from tests.support.api import JSON, assert_error, create_run, make_records, post_logs
from tests.support.waiting import wait_for


def test_csv_has_csvlogger_layout(api):
    create_run(api, "r")
    epochs = make_records(3, scope="epoch", metrics=("loss", "val_loss"))
    epochs[2]["metrics"]["val_loss"] = "NaN"
    post_logs(api, "r", epochs + make_records(4, start=100, metrics=("loss",)))
    response = api.get("/api/v1/runs/r/export.csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["epoch", "loss", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert float(rows[1][1]) == epochs[0]["metrics"]["loss"] and rows[3][2] == "nan"
    batch = list(csv.reader(io.StringIO(api.get("/api/v1/runs/r/export.csv", params={"scope": "batch"}).text)))
    assert batch[0] == ["step", "epoch", "loss"] and len(batch) == 5


def test_jsonl_round_trips_into_another_run(api):
    create_run(api, "r")
    records = make_records(250, metrics=("loss", "accuracy")) + make_records(2, start=1000, scope="epoch")
    records[7]["metrics"]["loss"] = "Infinity"
    post_logs(api, "r", records)
    lines = api.get("/api/v1/runs/r/export.jsonl").text.splitlines()
    exported = [json.loads(line) for line in lines]
    assert [r["seq"] for r in exported] == [r["seq"] for r in records]
    assert exported[7]["metrics"]["loss"] == "Infinity"
    assert exported[0] == {**records[0], "metrics": dict(sorted(records[0]["metrics"].items()))}
    create_run(api, "copy")
    body = json.dumps({"records": exported})
    assert api.post("/api/v1/runs/copy/logs", content=body, headers=JSON).json()["accepted"] == len(records)
    assert api.get("/api/v1/runs/copy/export.jsonl").text.splitlines() == lines


def test_export_of_unknown_run_is_404(api):
    assert_error(api.get("/api/v1/runs/nope/export.csv"), 404)
    assert_error(api.get("/api/v1/runs/nope/export.jsonl"), 404)
    create_run(api, "r")
    assert_error(api.get("/api/v1/runs/r/export.csv", params={"scope": "minute"}), 422)


def test_the_report_draws_system_samples_against_their_sample_number(api):
    create_run(api, "r")
    samples = [
        {"seq": i, "scope": "system", "step": i, "wall_time": 100.0 + i, "metrics": {"rss_mb": 500.0 + i}}
        for i in range(3)
    ]
    assert post_logs(api, "r", samples).status_code == 200
    report = api.get("/runs/r/report.html").text
    assert "rss_mb (system)" in report
    assert '"xaxis":{"title":{"text":"sample"}}' in report.replace(" ", "")


def batch_records_with_rate_changes() -> list[dict]:
    """What the Keras callback logs: the rate at the first step (before any epoch) and again
    where it changes, each a record of its own just before that step's batch record."""

    def record(seq: int, step: int, epoch: int | None, metrics: dict) -> dict:
        return {"seq": seq, "scope": "batch", "step": step, "epoch": epoch, "wall_time": seq, "metrics": metrics}

    return [
        record(0, 0, None, {"lr": 0.003, "lr.critic": 0.01}),
        record(1, 0, 0, {"loss": 0.9}),
        record(2, 1, 0, {"loss": 0.8}),
        record(3, 2, 1, {"lr": 0.0015}),
        record(4, 2, 1, {"loss": 0.7}),
        record(5, 3, 1, {"lr.critic": 0.005}),  # changed at the end of the last epoch: no batch follows
    ]


def test_batch_csv_has_one_row_a_step_with_the_rate_in_its_column(api):
    create_run(api, "r")
    post_logs(api, "r", batch_records_with_rate_changes()).raise_for_status()
    rows = list(csv.reader(io.StringIO(api.get("/api/v1/runs/r/export.csv", params={"scope": "batch"}).text)))
    assert rows == [
        ["step", "epoch", "loss", "lr", "lr.critic"],
        ["0", "0", "0.9", "0.003", "0.01"],
        ["1", "0", "0.8", "", ""],
        ["2", "1", "0.7", "0.0015", ""],
        ["3", "1", "", "", "0.005"],
    ]


def test_a_step_logged_twice_keeps_both_rows_in_the_csv(api):
    """A run resumed from an earlier checkpoint logs some steps again: each is a row."""
    create_run(api, "r")
    first = make_records(3, metrics=("loss",))
    again = [{**r, "seq": 10 + r["seq"], "wall_time": r["wall_time"] + 10} for r in make_records(2, start=1)]
    post_logs(api, "r", first + again).raise_for_status()
    rows = list(csv.reader(io.StringIO(api.get("/api/v1/runs/r/export.csv", params={"scope": "batch"}).text)))
    assert [row[0] for row in rows[1:]] == ["0", "1", "2", "1", "2"]


def test_an_export_holds_no_transaction_while_its_reader_is_slow(api, server, database_url):
    """The records are read at once and the transaction ends before the first byte goes out:
    a reader that stalls or leaves midway (`fitwatch export | head -1`, a closed tab) holds
    no connection of the pool and no snapshot of the database."""
    create_run(api, "r")
    post_logs(api, "r", make_records(5_000)).raise_for_status()
    with httpx.stream("GET", f"{server.url}/api/v1/runs/r/export.jsonl") as response:
        next(response.iter_bytes())  # then stalls, as a full pipe does
        # Others' transactions (the stale-run check's) come and go; the export's would stay.
        wait_for(lambda: not open_transactions(database_url), 30, "no transaction left open")


def open_transactions(database_url: str) -> bool:
    """Whether a transaction is open on the database (besides this check's own)."""
    if database_url.startswith("postgresql"):
        with psycopg.connect(libpq_url(database_url)) as conn:
            query = (
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
            )
            return conn.execute(query).fetchone()[0] > 0
    with contextlib.closing(sqlite3.connect(make_url(database_url).database)) as conn:
        return conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 1  # busy: a reader holds a snapshot
