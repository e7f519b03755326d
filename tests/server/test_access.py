"""Access: scoped tokens (401 without or with a wrong token, 403 without the right),
JSON-only writes, the Host check and CORS, and who issued each command."""

from __future__ import annotations

import pytest

from monitor_server.config import Settings
from tests.helpers import JSON, assert_error, make_records

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


def test_tokens_in_urls_are_not_logged(server):
    import logging

    from monitor_server.access import AccessLog

    access_log = logging.getLogger("uvicorn.access")
    [redact] = [f for f in access_log.filters if isinstance(f, AccessLog)]
    # The record uvicorn writes for each request: client, method, path with query, HTTP version, status.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/api/v1/runs/r/events?access_token={READ}&x=1", "1.1", 200),
        None,
    )
    assert redact.filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /api/v1/runs/r/events?access_token=[redacted]&x=1 HTTP/1.1" 200'
