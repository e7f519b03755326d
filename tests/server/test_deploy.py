"""Deployment: the compose file and Dockerfile describe a sound stack, the server starts
exactly as compose starts it (against this machine's PostgreSQL), and several server
processes on one database share live events, command long-polls and migrations."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml

from tests.support.api import TRAINING, create_run, make_records, post_logs
from tests.support.databases import fresh_pg_database, needs_postgres
from tests.support.servers import ServerProcess, free_port

from .test_events import Stream

ROOT = Path(__file__).parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def substitute(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR:-default}` and `${VAR:?message}`."""

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", one, value)


def test_compose_file_runs_the_server_on_postgres_behind_a_healthy_database():
    services = compose()["services"]
    db, server, demo = services["db"], services["server"], services["demo"]
    assert db["image"].startswith("postgres:")
    assert db["volumes"] == ["pgdata:/var/lib/postgresql/data"] and "pgdata" in compose()["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert server["build"]["target"] == "server"
    assert server["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert server["restart"] == "unless-stopped" and db["restart"] == "unless-stopped"
    url = server["environment"]["FITWATCH_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "@db:5432/" in url
    # Safe for a local machine: published on loopback unless told otherwise, no default token.
    assert substitute(server["ports"][0], {}) == "127.0.0.1:8000:8000"
    assert substitute(server["environment"]["FITWATCH_TOKEN"], {}) == ""
    assert demo["profiles"] == ["demo"] and demo["build"]["target"] == "demo"
    assert demo["environment"]["FITWATCH_URL"] == "http://server:8000"
    assert demo["depends_on"] == {"server": {"condition": "service_healthy"}}


def test_dockerfile_builds_a_slim_non_root_server_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    deps, rest = text.split("FROM deps AS server")
    server = rest.split("FROM deps AS tensorflow")[0]
    assert re.search(r"^FROM python:3\.\d+-slim AS deps$", deps, re.M)
    assert "['postgres']" in deps and "tensorflow" not in deps + server
    assert re.search(r"^USER fitwatch$", server, re.M)
    assert "HEALTHCHECK" in server and "/healthz" in server
    assert "EXPOSE 8000" in server and "FITWATCH_PORT=8000" in deps
    assert 'CMD ["fitwatch", "serve", "--host", "0.0.0.0"]' in server


@needs_postgres
def test_server_starts_as_compose_starts_it_and_takes_a_log_batch():
    server = compose()["services"]["server"]
    with fresh_pg_database("fitwatch_deploy") as local_url:
        env = {k: substitute(str(v), {}) for k, v in server["environment"].items()}
        # The one change: the database is this machine's PostgreSQL, not the `db` service.
        env["FITWATCH_DATABASE_URL"] = local_url
        port = free_port()
        env["FITWATCH_PORT"] = str(port)  # the container's 8000, on a free port here
        command = [substitute(part, {}) for part in server["command"]]
        assert command[0] == "fitwatch"
        command[0] = str(Path(sys.executable).parent / "fitwatch")
        process = ServerProcess(local_url, port)
        process.start(command, env={**os.environ, **env})
        try:
            # `--workers 2`: the main process and two server processes under it.
            children = subprocess.run(
                ["pgrep", "-P", str(process.proc.pid)], capture_output=True, text=True
            ).stdout.split()
            assert len(children) >= 2, children
            with httpx.Client(base_url=process.url, timeout=10) as api:
                assert api.get("/healthz").json() == {"status": "ok", "database": "postgresql"}
                create_run(api, "compose")
                assert post_logs(api, "compose", make_records(100)).json()["accepted"] == 100
                assert api.get("/api/v1/runs/compose/series/batch/loss").json()["count"] == 100
        finally:
            process.stop()


@needs_postgres
def test_two_servers_on_one_database_share_events_and_commands():
    with fresh_pg_database("fitwatch_deploy") as url:
        a, b = ServerProcess(url), ServerProcess(url)
        # Both start at once on an empty database: the migration runs once, under a lock.
        starters = [threading.Thread(target=p.start) for p in (a, b)]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        try:
            with httpx.Client(base_url=a.url, timeout=30) as api_a, httpx.Client(base_url=b.url, timeout=30) as api_b:
                create_run(api_a, "shared")
                stream = Stream(f"{b.url}/api/v1/runs/shared/events")
                try:
                    stream.next("run")
                    # A sends a run's points only once B's interest in the run has reached it:
                    # post batches until one arrives on B (within a second or two of the first).
                    for batch in range(60):
                        post_logs(api_a, "shared", make_records(3, start=3 * batch))
                        try:
                            data, _ = stream.next("metrics", timeout=0.5)
                            break
                        except queue.Empty:
                            continue
                    else:
                        raise AssertionError("no point posted to A reached B's stream")
                    steps = [r["step"] for r in data["records"]]
                    assert steps == [3 * batch, 3 * batch + 1, 3 * batch + 2]
                finally:
                    stream.close()

                answer = {}
                poll = threading.Thread(
                    target=lambda: answer.update(
                        r=api_b.get(
                            "/api/v1/runs/shared/commands", params={"status": "pending", "wait": 30}, headers=TRAINING
                        )
                    )
                )
                poll.start()
                time.sleep(0.5)  # the long-poll is waiting on B
                command = api_a.post("/api/v1/runs/shared/commands", json={"type": "stop_training"}).json()
                # Woken by A's NOTIFY: it answers long before its own 30 s would have run out.
                poll.join(20)
                assert not poll.is_alive(), "the long-poll on B was not woken by the command issued on A"
                assert [c["id"] for c in answer["r"].json()] == [command["id"]]
        finally:
            a.stop()
            b.stop()
