"""Exports: CSVLogger-layout CSV and JSONL that round-trips into a new run."""

from __future__ import annotations

import csv
import io
import json

from tests.helpers import JSON, assert_error, create_run, make_records, post_logs


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
