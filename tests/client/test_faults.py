"""Faults between the training and the database: a proxy that loses the server's answers
after the server committed, and PostgreSQL restarting under a running server."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import warnings

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from client_callbacks import RemoteCallback
from tests.support.api import records
from tests.support.databases import needs_postgres
from tests.support.servers import ServerProcess, free_port
from tests.support.training import STEPS, AtStep, fit

pytestmark = pytest.mark.slow  # real Keras fits against a server that fails


class FaultyProxy:
    """Forwards to the server, but spoils the first `FAULTS` log posts. `lose`: the server
    commits the batch and its answer is replaced by a 500. `conflict`: the post is
    answered 409, as the server answers a conflict with stored data, and not forwarded."""

    FAULTS = 3

    def __init__(self, upstream: str, fault: str) -> None:
        self.upstream = upstream
        self.fault = fault
        self.spoiled = 0
        app = Starlette(routes=[Route("/{path:path}", self.forward, methods=["GET", "POST", "PATCH", "DELETE"])])
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port}"

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        logs = request.url.path.endswith("/logs")
        if logs and self.fault == "conflict" and self.spoiled < self.FAULTS:
            self.spoiled += 1
            return Response('{"detail": "the request conflicts with stored data"}', 409, media_type="application/json")
        headers = {k: v for k, v in request.headers.items() if k in ("content-type", "authorization")}
        # Asynchronous, so that a command long-poll going through does not hold up the rest.
        async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as upstream:
            answer = await upstream.request(
                request.method, request.url.path, params=request.query_params, content=body, headers=headers
            )
        if logs and self.fault == "lose" and answer.status_code == 200 and self.spoiled < self.FAULTS:
            self.spoiled += 1
            return Response('{"detail": "proxy lost the answer"}', status_code=500, media_type="application/json")
        return Response(answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type"))

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.mark.parametrize("fault", ["lose", "conflict"])
def test_spoiled_log_posts_are_retried_and_stored_once(server, api, spool_dir, fault):
    """Answers lost after the server committed, and conflicts: every record is stored, once."""
    proxy = FaultyProxy(server.url, fault)
    try:
        cb = RemoteCallback(url=proxy.url, spool_dir=spool_dir, flush_interval=0.05)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            fit([AtStep({}, pause=0.01), cb], epochs=3)
    finally:
        proxy.close()
    assert proxy.spoiled == FaultyProxy.FAULTS
    stored = [r for r in records(api, cb.run_id) if r["scope"] == "batch" and "loss" in r["metrics"]]
    assert sorted(r["step"] for r in stored) == list(range(3 * STEPS))
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "finished"


def _restart_postgres() -> None:
    cluster = os.listdir("/etc/postgresql")[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"], check=True, timeout=120)


@needs_postgres
def test_postgres_restart_mid_run_loses_nothing(pg_database, spool_dir):
    from tests.support.databases import clean_postgres

    clean_postgres(pg_database)
    process = ServerProcess(pg_database).start()
    try:
        cb = RemoteCallback(url=process.url, spool_dir=spool_dir, flush_interval=0.05)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            fit([AtStep({12: lambda s: _restart_postgres()}, pause=0.02), cb], epochs=4)
        assert cb.spool_file is None  # all delivered by the end of fit
        with httpx.Client(base_url=process.url, timeout=30) as api:
            stored = [r for r in records(api, cb.run_id) if r["scope"] == "batch" and "loss" in r["metrics"]]
            assert sorted(r["step"] for r in stored) == list(range(4 * STEPS))
            assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "finished"
            assert api.get("/healthz").json()["database"] == "postgresql"
    finally:
        process.stop()
