"""Runs: idempotent create, list with filters, read with latest values, patch, delete,
and the liveness rule that reports a silent run as interrupted."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from tests.server.test_events import Stream
from tests.support.api import JSON, assert_error, create_run, make_records, post_logs


def test_health_names_the_database(api, database_url):
    body = api.get("/healthz").json()
    assert body == {"status": "ok", "database": "postgresql" if database_url.startswith("postgresql") else "sqlite"}


def test_create_is_idempotent_by_id(api):
    first = api.post("/api/v1/runs", json={"id": "run-1", "name": "mlp", "project": "p", "config": {"lr": 0.1}})
    assert first.status_code == 201
    again = api.post("/api/v1/runs", json={"id": "run-1", "name": "other"})
    assert again.status_code == 200
    assert again.json()["name"] == "mlp" and again.json()["created_at"] == first.json()["created_at"]
    assert len(api.get("/api/v1/runs").json()) == 1


def test_create_without_id_makes_one(api):
    run = api.post("/api/v1/runs", json={}).json()
    assert len(run["id"]) == 32 and run["name"] == run["id"]
    assert run["project"] == "default" and run["status"] == "running" and run["config"] == {}


def test_config_keeps_nested_values_and_names_nonfinite(api):
    config = {"fit": {"epochs": 3, "batch_size": 32}, "layers": [64, 10], "clip": float("inf")}
    # Python's json writes the bare Infinity token, as a Keras user's client would.
    response = api.post("/api/v1/runs", content=json.dumps({"id": "cfg", "config": config}), headers=JSON)
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["config"] == {"fit": {"epochs": 3, "batch_size": 32}, "layers": [64, 10], "clip": "Infinity"}
    assert api.get("/api/v1/runs/cfg").json()["config"] == run["config"]


def test_list_is_newest_first_with_filters_and_paging(api):
    for i, project in enumerate(["a", "b", "a"]):
        create_run(api, f"r{i}", project=project)
        time.sleep(0.01)
    api.patch("/api/v1/runs/r1", json={"status": "finished"})
    assert [r["id"] for r in api.get("/api/v1/runs").json()] == ["r2", "r1", "r0"]
    assert [r["id"] for r in api.get("/api/v1/runs", params={"project": "a"}).json()] == ["r2", "r0"]
    assert [r["id"] for r in api.get("/api/v1/runs", params={"status": "finished"}).json()] == ["r1"]
    assert [r["id"] for r in api.get("/api/v1/runs", params={"limit": 1, "offset": 1}).json()] == ["r1"]


def test_read_has_latest_epoch_values(api):
    create_run(api, "r")
    records = make_records(3, scope="epoch", metrics=("loss", "val_loss"))
    records[-1]["metrics"]["val_loss"] = "NaN"
    post_logs(api, "r", records + make_records(5, start=10, metrics=("batch_only",)))
    latest = api.get("/api/v1/runs/r").json()["latest"]
    assert latest == {"loss": records[-1]["metrics"]["loss"], "val_loss": "NaN"}


def test_patch_status_reason_name_and_config(api):
    create_run(api, "r")
    run = api.patch(
        "/api/v1/runs/r", json={"status": "stopped", "reason": "stop command", "name": "n2", "config": {"x": 1}}
    ).json()
    assert (run["status"], run["reason"], run["name"], run["config"]) == ("stopped", "stop command", "n2", {"x": 1})
    run = api.patch("/api/v1/runs/r", json={"status": "running"}).json()
    assert run["status"] == "running" and run["reason"] is None


def test_delete_removes_points_and_commands(api):
    create_run(api, "gone")
    create_run(api, "kept")
    post_logs(api, "gone", make_records(50))
    post_logs(api, "kept", make_records(50))
    api.post("/api/v1/runs/gone/commands", json={"type": "stop_training"})
    assert api.delete("/api/v1/runs/gone", headers=JSON).status_code == 204
    assert_error(api.get("/api/v1/runs/gone"), 404)
    assert_error(api.get("/api/v1/runs/gone/series"), 404)
    # The id is free again and starts empty: nothing of the old run survived.
    create_run(api, "gone")
    assert api.get("/api/v1/runs/gone/series").json() == []
    assert post_logs(api, "gone", make_records(50)).json()["accepted"] == 50
    assert api.get("/api/v1/runs/gone/commands").json() == []
    assert api.get("/api/v1/runs/kept/series/batch/loss").json()["count"] == 50


def test_silent_run_is_reported_interrupted_and_revives_when_it_talks(start_server):
    stale_after = 1.0
    server = start_server(stale_after=stale_after)
    with server.client() as api:
        create_run(api, "quiet")
        create_run(api, "done")
        api.patch("/api/v1/runs/done", json={"status": "finished"})
        time.sleep(stale_after * 1.3)
        assert api.get("/api/v1/runs/quiet").json()["status"] == "interrupted"
        assert [r["id"] for r in api.get("/api/v1/runs", params={"status": "interrupted"}).json()] == ["quiet"]
        assert api.get("/api/v1/runs", params={"status": "running"}).json() == []
        assert api.get("/api/v1/runs/done").json()["status"] == "finished"
        talked = time.time()
        post_logs(api, "quiet", make_records(1))
        run = api.get("/api/v1/runs/quiet").json()
        # The post recorded contact; how the run reads then depends only on how long ago that
        # was, which a busy machine may stretch past the timeout.
        assert datetime.fromisoformat(run["last_seen"]).timestamp() >= talked - 1e-3
        assert run["status"] == "running" or time.time() - talked >= stale_after


def test_config_is_kept_as_sent_nul_characters_included(api):
    config = {"a": "nul\x00", "nested": {"k\x00": [1, 2.5, None, True]}}
    assert create_run(api, "r", config=config)["config"] == config
    assert api.get("/api/v1/runs/r").json()["config"] == config


@pytest.mark.parametrize(
    "body",
    [
        {"id": "has space"},
        {"id": "x" * 65},
        {"id": ""},
        {"id": 5},
        {"name": ""},
        {"project": 3},
        {"config": [1, 2]},
        {"name": "nul\x00"},
        {"unknown": 1},
    ],
)
def test_bad_run_bodies_are_422(api, body):
    assert_error(api.post("/api/v1/runs", json=body), 422)
    assert api.get("/api/v1/runs").json() == []


def test_bad_run_id_in_path_and_unknown_run(api):
    assert_error(api.get("/api/v1/runs/bad%20id"), 422)
    assert_error(api.get("/api/v1/runs/nope"), 404)
    assert_error(api.patch("/api/v1/runs/nope", json={"status": "finished"}), 404)
    assert_error(api.delete("/api/v1/runs/nope", headers=JSON), 404)
    create_run(api, "r")
    assert_error(api.patch("/api/v1/runs/r", json={"status": "exploded"}), 422)
    assert_error(api.get("/api/v1/runs", params={"status": "exploded"}), 422)
    assert_error(api.post("/api/v1/runs", content=b"{not json", headers={"content-type": "application/json"}), 400)


def test_token_guards_writes_not_reads(start_server):
    server = start_server(token="s3cret")
    with server.client() as api:
        assert_error(api.post("/api/v1/runs", json={"id": "r"}), 401)
        assert_error(api.post("/api/v1/runs", json={"id": "r"}, headers={"Authorization": "Bearer wrong"}), 401)
        auth = {"Authorization": "Bearer s3cret"}
        assert api.post("/api/v1/runs", json={"id": "r"}, headers=auth).status_code == 201
        assert_error(post_logs(api, "r", make_records(1)), 401)
        assert api.post("/api/v1/runs/r/logs", json={"records": make_records(1)}, headers=auth).json()["accepted"] == 1
        assert api.get("/api/v1/runs/r").status_code == 200


def test_patch_with_explicit_nulls_changes_nothing_but_the_reason(api):
    create_run(api, "r", name="keep")
    api.patch("/api/v1/runs/r", json={"status": "failed", "reason": "boom"})
    run = api.patch("/api/v1/runs/r", json={"status": None, "name": None, "config": None, "reason": None}).json()
    assert (run["status"], run["name"], run["reason"]) == ("failed", "keep", None)


def test_nul_in_a_filter_is_refused_not_a_server_error(api):
    assert_error(api.get("/api/v1/runs", params={"project": "a\x00b"}), 422)
    assert api.get("/api/v1/runs").status_code == 200


def test_huge_numbers_in_config_round_trip(api, server):
    run = api.post("/api/v1/runs", json={"id": "big", "config": {"x": 1.3e278, "n": 2**62}}).json()
    assert run["config"] == {"x": 1.3e278, "n": 2**62}
    assert api.get("/api/v1/runs/big").json()["config"] == {"x": 1.3e278, "n": 2**62}


def test_integers_past_64_bits_in_a_config_come_back_exactly_from_either_database(api, server):
    sent = '{"id": "big", "config": {"a": 18446744073709551617, "b": 1%s, "c": 1.5e300}}' % ("0" * 400)
    config = {"a": 2**64 + 1, "b": 10**400, "c": 1.5e300}
    stream = Stream(f"{server.url}/api/v1/events")
    try:
        stream.next("ready")
        response = api.post("/api/v1/runs", content=sent, headers=JSON)
        assert response.status_code == 201, response.text
        assert json.loads(response.text)["config"] == config
        assert stream.next("run")[0]["id"] == "big"  # the list's stream: no config
    finally:
        stream.close()
    assert json.loads(api.get("/api/v1/runs/big").text)["config"] == config
    patched = api.patch("/api/v1/runs/big", content='{"config": {"n": -%s}}' % (2**70), headers=JSON)
    assert json.loads(patched.text)["config"] == {"n": -(2**70)}
    assert json.loads(api.get("/api/v1/runs/big").text)["config"] == {"n": -(2**70)}


def config_of_size(size: int) -> dict:
    """A config whose compact JSON is `size` bytes."""
    config = {"k": "x" * (size - len('{"k":""}'))}
    assert len(json.dumps(config, separators=(",", ":"))) == size
    return config


def test_a_config_over_the_limit_is_refused_on_create_and_patch(start_server):
    server = start_server(max_config_bytes=100)
    with server.client() as api:
        detail = assert_error(api.post("/api/v1/runs", json={"id": "r", "config": config_of_size(101)}), 413)
        assert detail == "config is 101 bytes of JSON, over the limit of 100 (FITWATCH_MAX_CONFIG_BYTES)"
        assert_error(api.get("/api/v1/runs/r"), 404)  # not created
        assert create_run(api, "r", config=config_of_size(100))["config"] == config_of_size(100)

        detail = assert_error(api.patch("/api/v1/runs/r", json={"config": config_of_size(101)}), 413)
        assert "over the limit of 100" in detail
        assert api.get("/api/v1/runs/r").json()["config"] == config_of_size(100)
        # Counted in UTF-8: 71 characters, 101 bytes.
        over = {"k": "\u00e9" * 30 + "x" * 33}
        assert_error(api.patch("/api/v1/runs/r", json={"config": over}), 413)


def test_the_config_limit_is_one_mib_unless_set(api):
    assert_error(api.post("/api/v1/runs", json={"id": "big", "config": config_of_size(2**20 + 1)}), 413)
    assert create_run(api, "big", config=config_of_size(2**20))["config"]["k"].startswith("xxx")
