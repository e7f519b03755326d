"""Faults between the training and the database: a proxy that loses the server's answers
after the server committed, PostgreSQL restarting under a running server, and the spool's
disk filling up while the server is away."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from client_callbacks import FitwatchWarning, RemoteCallback
from tests.conftest import ServerProcess, free_port, needs_postgres, wait_for

from .conftest import STEPS, AtStep, fit, records, send_and_wait


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
    from tests.conftest import _clean_postgres

    _clean_postgres(pg_database)
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


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk that really fills up (ENOSPC), for the spool."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass


def test_a_full_disk_while_the_server_is_away_costs_one_warning_and_no_record(tmp_path, small_disk):
    """The server goes away, the spool takes records, then its disk fills: records and the
    ack of a command applied meanwhile wait in memory and are delivered, each once, when the
    server is back; `fit` never hears of it but for one warning."""
    server = ServerProcess(f"sqlite:///{tmp_path / 'fitwatch.db'}").start()
    spool = small_disk / "spool"
    cb = RemoteCallback(url=server.url, spool_dir=spool, flush_interval=0.05, system_interval=None)
    api = httpx.Client(base_url=server.url, timeout=30)
    caught: list[warnings.WarningMessage] = []

    def away(step):
        send_and_wait(api, cb, {"type": "set_lr", "args": {"value": 0.02}, "at": {"step": 20}})
        server.kill()

    def disk_full(step):
        wait_for(lambda: any(p.stat().st_size > 200 for p in spool.glob("*.jsonl")), 30, "records in the spool")
        _fill(small_disk)

    def back(step):
        wait_for(lambda: any("spool file" in str(w.message) for w in caught), 30, "a write to the full disk")
        server.start()

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = fit([AtStep({2: away, 10: disk_full, 40: back}, pause=0.01), cb], epochs=5)
        told = [str(w.message) for w in caught if issubclass(w.category, FitwatchWarning)]
        assert len([m for m in told if "spool file" in m]) == 1, told
        assert not [m for m in told if "lost" in m or "dropped" in m], told
        assert cb.spool_file is None  # all delivered by the end of fit
        stored = [r for r in records(api, cb.run_id) if r["scope"] == "batch" and "loss" in r["metrics"]]
        assert sorted(r["step"] for r in stored) == list(range(5 * STEPS))
        [command] = api.get(f"/api/v1/runs/{cb.run_id}/commands").json()
        assert (command["status"], command["step"]) == ("applied", 20)
        assert float(model.optimizer.learning_rate) == pytest.approx(0.02)
        assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "finished"
    finally:
        api.close()
        server.stop()
