"""Access: scoped tokens (401 without or with a wrong token, 403 without the right),
JSON-only writes, foreign origins, the proof a training gives to take commands, the Host
check and CORS, who issued each command, tokens kept out of the access log, and the
security the OpenAPI document declares."""

from __future__ import annotations

import logging

import pytest

from monitor_server.config import Settings
from tests.support.api import JSON, TRAINING, assert_error, make_records

ADMIN, INGEST, READ = "admin-secret", "ingest-secret", "read-secret"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def scoped(start_server):
    return start_server(token=ADMIN, ingest_token=INGEST, read_token=READ)


def test_ingest_token_trains_but_cannot_control(scoped):
    with scoped.client(headers=bearer(INGEST)) as trainer, scoped.client(headers=bearer(ADMIN)) as admin:
        assert trainer.post("/api/v1/runs", json={"id": "r"}).status_code == 201
        assert trainer.post("/api/v1/runs/r/logs", json={"records": make_records(3)}).json()["accepted"] == 3
        assert_error(trainer.post("/api/v1/runs/r/commands", json={"type": "stop_training"}), 403)
        command = admin.post("/api/v1/runs/r/commands", json={"type": "stop_training"}).json()
        assert command["issued_by"] == "admin"
        assert [c["id"] for c in trainer.get("/api/v1/runs/r/commands", params={"status": "pending"}).json()] == [
            command["id"]
        ]
        assert (
            trainer.post(f"/api/v1/runs/r/commands/{command['id']}/ack", json={"status": "applied"}).status_code == 200
        )
        assert_error(trainer.post(f"/api/v1/runs/r/commands/{command['id']}/cancel", headers=JSON), 403)
        assert_error(trainer.delete("/api/v1/runs/r", headers=JSON), 403)
        assert trainer.patch("/api/v1/runs/r", json={"status": "finished"}).status_code == 200
        assert admin.delete("/api/v1/runs/r", headers=JSON).status_code == 204


def test_missing_or_wrong_token_is_401_and_read_token_cannot_write(scoped):
    with (
        scoped.client() as anonymous,
        scoped.client(headers=bearer("nope")) as wrong,
        scoped.client(headers=bearer(READ)) as reader,
    ):
        for client in (anonymous, wrong):
            response = client.post("/api/v1/runs", json={"id": "r"})
            assert_error(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        assert_error(reader.post("/api/v1/runs", json={"id": "r"}), 403)
        assert anonymous.get("/api/v1/runs").status_code == 200  # reads are open by default
        assert_error(wrong.get("/api/v1/runs"), 401)


def test_protected_reads_need_a_token_also_in_the_url_for_streams(start_server):
    server = start_server(token=ADMIN, read_token=READ, protect_reads=True)
    with server.client() as anonymous, server.client(headers=bearer(READ)) as reader:
        assert_error(anonymous.get("/api/v1/runs"), 401)
        assert reader.get("/api/v1/runs").json() == []
        assert anonymous.get("/api/v1/runs", params={"access_token": READ}).status_code == 200
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/").status_code == 200  # the page itself holds no data
        assert_error(reader.get("/api/v1/runs/x/commands", params={"status": "pending"}), 403)


def test_scoped_tokens_need_the_main_token():
    with pytest.raises(ValueError, match="need FITWATCH_TOKEN"):
        Settings(ingest_token="x")


def test_writes_from_another_site_are_refused(server, api):
    cross = {"sec-fetch-site": "cross-site", "origin": "https://evil.example"}
    assert_error(api.post("/api/v1/runs", json={"id": "r"}, headers=cross), 403)
    assert_error(api.post("/api/v1/runs/r/commands/1/cancel", headers=cross), 403)
    assert api.get("/api/v1/runs").json() == []
    same = {"sec-fetch-site": "same-origin", "origin": server.url}
    assert api.post("/api/v1/runs", json={"id": "r"}, headers=same).status_code == 201


def test_writes_must_be_json(server, api):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        assert_error(api.post("/api/v1/runs", content=b'{"id": "r"}', headers=headers), 415)
    assert api.get("/api/v1/runs").json() == []  # nothing was created
    assert (
        api.post(
            "/api/v1/runs", content=b'{"id": "r"}', headers={"content-type": "application/json; charset=utf-8"}
        ).status_code
        == 201
    )


def test_commands_on_an_open_server_are_issued_by_anonymous(api):
    api.post("/api/v1/runs", json={"id": "r"})
    assert api.post("/api/v1/runs/r/commands", json={"type": "stop_training"}).json()["issued_by"] == "anonymous"


def test_unknown_host_is_refused_on_loopback(server, api):
    assert_error(api.get("/api/v1/runs", headers={"host": "evil.example:8000"}), 400)
    assert api.get("/api/v1/runs", headers={"host": "localhost:8000"}).status_code == 200


def test_allowed_hosts_can_be_set(start_server):
    server = start_server(allowed_hosts=["fitwatch.internal"])
    with server.client() as api:
        assert api.get("/api/v1/runs", headers={"host": "fitwatch.internal"}).status_code == 200
        assert_error(api.get("/api/v1/runs"), 400)  # 127.0.0.1 is not listed
        assert api.get("/healthz").status_code == 200  # a health check, from the machine itself


def test_no_cors_headers_unless_origins_are_listed(start_server):
    preflight = {
        "origin": "https://dash.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    closed = start_server()
    with closed.client() as api:
        assert "access-control-allow-origin" not in api.options("/api/v1/runs", headers=preflight).headers
        assert (
            "access-control-allow-origin"
            not in api.get("/api/v1/runs", headers={"origin": "https://dash.example"}).headers
        )
    opened = start_server(cors_origins=["https://dash.example"])
    with opened.client() as api:
        assert (
            api.options("/api/v1/runs", headers=preflight).headers["access-control-allow-origin"]
            == "https://dash.example"
        )


def test_tokens_in_urls_are_not_logged_however_the_name_is_written(server, api, caplog):
    queries = [
        f"access_token={READ}&x=1",
        f"access%5Ftoken={READ}",
        f"ACCESS_TOKEN={READ}",
        f"x=%41&Access%5FToken={READ}",
    ]
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):  # the tests' servers log warnings only
        for query in queries:
            api.get(f"/api/v1/runs?{query}").raise_for_status()
    logged = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert READ not in "".join(logged)
    for query in ("access_token=[redacted]&x=1", "access%5Ftoken=[redacted]", "ACCESS_TOKEN=[redacted]"):
        assert any(f'"GET /api/v1/runs?{query} HTTP/1.1" 200' in line for line in logged), logged
    assert any('"GET /api/v1/runs?x=%41&Access%5FToken=[redacted] HTTP/1.1" 200' in line for line in logged), logged


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/publish/epoch/end/?run=evil", {"data": {"data": '{"epoch": 0, "loss": 1}'}}),
        ("POST", "/api/v1/runs", {"json": {"id": "evil"}}),
        ("GET", "/api/v1/runs", {}),
    ],
    ids=["form", "json", "read"],
)
def test_a_request_from_a_foreign_origin_is_refused_whatever_else_it_sends(server, api, method, path, kwargs):
    port = server.url.rsplit(":", 1)[1]
    for origin in ("http://evil.example", "null", f"http://127.0.0.1.evil.example:{port}", "http://[", "http://[::1"):
        assert_error(api.request(method, path, headers={"origin": origin}, **kwargs), 403)
        assert_error(
            api.request(method, path, headers={"origin": origin, "sec-fetch-site": "same-origin"}, **kwargs), 403
        )
    assert api.get("/api/v1/runs").json() == []


def test_the_servers_own_origin_and_listed_ones_may_call(start_server):
    server = start_server(cors_origins=["https://dash.example"])
    port = server.url.rsplit(":", 1)[1]
    with server.client() as api:
        assert api.post("/api/v1/runs", json={"id": "a"}, headers={"origin": server.url}).status_code == 201
        own_name = {"origin": f"http://localhost:{port}", "host": f"localhost:{port}"}
        assert api.post("/api/v1/runs", json={"id": "b"}, headers=own_name).status_code == 201
        listed = {"origin": "https://dash.example", "sec-fetch-site": "cross-site"}
        assert api.post("/api/v1/runs", json={"id": "c"}, headers=listed).status_code == 201
        assert api.get("/api/v1/runs", headers={"origin": "https://dash.example"}).status_code == 200
        other_port = {"origin": f"http://127.0.0.1:{int(port) + 1}"}
        assert_error(api.post("/api/v1/runs", json={"id": "d"}, headers=other_port), 403)


def test_a_poll_without_proof_of_the_training_changes_no_command(server, api):
    api.post("/api/v1/runs", json={"id": "r"})
    command = api.post("/api/v1/runs/r/commands", json={"type": "stop_training"}).json()
    # What a page on another site can make a browser send: a plain GET, with or without Origin.
    for headers in (
        {},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "cross-site", "origin": "http://evil.example"},
    ):
        response = api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=headers)
        assert_error(response, 403)
        assert [c["status"] for c in api.get("/api/v1/runs/r/commands").json()] == ["pending"]
    taken = api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING).json()
    assert [(c["id"], c["status"]) for c in taken] == [(command["id"], "delivered")]


def test_fitwatchs_client_takes_pending_commands_on_an_open_server(server, api):
    from client_callbacks.transport import http_client, request

    api.post("/api/v1/runs", json={"id": "r"})
    command = api.post("/api/v1/runs/r/commands", json={"type": "stop_training"}).json()
    with http_client(server.url, None, 10) as training:  # as the poller polls
        taken = request(training, "GET", "/api/v1/runs/r/commands", params={"status": "pending", "wait": 0}).json()
    assert [(c["id"], c["status"]) for c in taken] == [(command["id"], "delivered")]


def test_the_ingest_token_is_proof_enough_of_the_training(scoped):
    with scoped.client(headers=bearer(INGEST)) as trainer, scoped.client(headers=bearer(ADMIN)) as admin:
        trainer.post("/api/v1/runs", json={"id": "r"})
        admin.post("/api/v1/runs/r/commands", json={"type": "stop_training"})
        assert [c["status"] for c in trainer.get("/api/v1/runs/r/commands", params={"status": "pending"}).json()] == [
            "delivered"
        ]


def test_the_schema_says_which_operations_need_the_token(start_server):
    def security(server) -> tuple[dict | None, dict]:
        with server.client() as api:
            schema = api.get("/openapi.json").json()
        return schema.get("components", {}).get("securitySchemes"), {
            (method.upper(), path): op.get("security")
            for path, item in schema["paths"].items()
            for method, op in item.items()
        }

    schemes, ops = security(start_server())
    assert schemes is None and set(ops.values()) == {None}  # open: nothing to send
    schemes, ops = security(start_server(token=ADMIN))
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
    assert schemes["access_token"] == {"type": "apiKey", "in": "query", "name": "access_token"}
    required, optional = [{"bearer": []}], [{}, {"bearer": []}, {"access_token": []}]
    assert ops[("POST", "/api/v1/runs")] == required
    assert ops[("DELETE", "/api/v1/runs/{run_id}")] == required
    assert ops[("POST", "/api/v1/runs/{run_id}/commands")] == required
    assert ops[("POST", "/publish/epoch/end/")] == required
    assert ops[("GET", "/api/v1/runs")] == optional
    assert ops[("GET", "/healthz")] is None
    _, ops = security(start_server(token=ADMIN, protect_reads=True))
    assert ops[("GET", "/api/v1/runs")] == [{"bearer": []}, {"access_token": []}]
    assert ops[("GET", "/api/v1/runs/{run_id}/events")] == [{"bearer": []}, {"access_token": []}]
