"""`fitwatch serve` and `python -m monitor_server` start a real server process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.api import TRAINING, create_run, make_records
from tests.support.servers import free_port
from tests.support.waiting import wait_for


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).json()
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("server did not answer /healthz")


def start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FITWATCH_")}
    return subprocess.Popen(
        args, cwd=cwd, env={**clean, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop(proc: subprocess.Popen) -> str:
    """Stop the server; what it wrote to stderr."""
    proc.terminate()
    _, err = proc.communicate(timeout=15)
    return err.decode()


@pytest.mark.parametrize("how", ["fitwatch", "module"])
def test_serve_defaults_to_sqlite_file_in_working_folder(tmp_path, how):
    port = free_port()
    command = [shutil.which("fitwatch"), "serve"] if how == "fitwatch" else [sys.executable, "-m", "monitor_server"]
    proc = start([*command, "--port", str(port)], tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_healthy(url, proc) == {"status": "ok", "database": "sqlite"}
        assert (tmp_path / "fitwatch.db").exists()
        httpx.post(f"{url}/api/v1/runs", json={"id": "r"}).raise_for_status()
        answer = httpx.post(f"{url}/api/v1/runs/r/logs", json={"records": make_records(10)}).json()
        assert answer["accepted"] == 10
    finally:
        stop(proc)


def test_flags_override_environment(tmp_path, database_url):
    port = free_port()
    env = {"FITWATCH_PORT": "1", "FITWATCH_DATABASE_URL": "sqlite:////nonexistent/dir/x.db"}
    proc = start([shutil.which("fitwatch"), "serve", "--port", str(port), "--db", database_url], tmp_path, env)
    try:
        health = wait_healthy(f"http://127.0.0.1:{port}", proc)
        assert health["database"] == ("postgresql" if database_url.startswith("postgresql") else "sqlite")
    finally:
        stop(proc)


def test_environment_configures_the_server(tmp_path):
    port = free_port()
    env = {"FITWATCH_PORT": str(port), "FITWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}"}
    proc = start([shutil.which("fitwatch"), "serve"], tmp_path, env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        assert (tmp_path / "env.db").exists() and not (tmp_path / "fitwatch.db").exists()
    finally:
        stop(proc)


def test_exposed_without_token_warns(tmp_path):
    port = free_port()
    proc = start([shutil.which("fitwatch"), "serve", "--host", "0.0.0.0", "--port", str(port)], tmp_path)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
    finally:
        err = stop(proc)
    assert "no FITWATCH_TOKEN" in err


def test_server_on_sqlite_needs_no_postgres_driver(tmp_path):
    """`pip install fitwatch` without the postgres extra: psycopg is absent."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from fastapi.testclient import TestClient\n"
        "from monitor_server import create_app\n"
        "from monitor_server.config import Settings\n"
        f"app = create_app(Settings(database_url='sqlite:///{tmp_path / 'x.db'}'))\n"
        "with TestClient(app, base_url='http://127.0.0.1') as c: assert c.get('/healthz').json()['database'] == 'sqlite'\n"
        "assert sys.modules['psycopg'] is None\n"
    )
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("args", "env", "logged"),
    [
        ([], {}, True),
        (["--no-access-log"], {}, False),
        ([], {"FITWATCH_ACCESS_LOG": "false"}, False),
        (["--access-log"], {"FITWATCH_ACCESS_LOG": "false"}, True),
    ],
    ids=["default", "flag-off", "env-off", "flag-beats-env"],
)
def test_access_log_can_be_turned_off(tmp_path, args, env, logged):
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FITWATCH_")}
    command = [shutil.which("fitwatch"), "serve", "--port", str(port), *args]
    proc = subprocess.Popen(command, cwd=tmp_path, env={**clean, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        httpx.get(f"{url}/api/v1/runs").raise_for_status()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert ('"GET /api/v1/runs HTTP/1.1" 200' in (out + err).decode()) is logged


def fitwatch(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FITWATCH_")}
    return subprocess.run(
        [shutil.which("fitwatch"), *args], env={**clean, **(env or {})}, capture_output=True, timeout=60
    )


def test_export_writes_csv_jsonl_and_one_scope(start_server, tmp_path):
    server = start_server(token="s3cret")
    with server.client(headers={"authorization": "Bearer s3cret"}) as api:
        create_run(api, "r")
        epochs = [{**r, "scope": "epoch", "step": r["seq"], "epoch": r["seq"]} for r in make_records(3)]
        api.post("/api/v1/runs/r/logs", json={"records": make_records(5, start=10) + epochs}).raise_for_status()
        expected_csv = api.get("/api/v1/runs/r/export.csv").content
        expected_jsonl = api.get("/api/v1/runs/r/export.jsonl").content
    env = {"FITWATCH_URL": server.url, "FITWATCH_TOKEN": "s3cret"}

    csv_out = fitwatch("export", "r", env=env)
    assert csv_out.returncode == 0, csv_out.stderr
    assert csv_out.stdout == expected_csv and csv_out.stdout.startswith(b"epoch,accuracy,loss\n")

    target = tmp_path / "r.jsonl"
    assert fitwatch("export", "r", "--format", "jsonl", "-o", str(target), env=env).returncode == 0
    assert target.read_bytes() == expected_jsonl and len(target.read_bytes().splitlines()) == 8

    batch = fitwatch("export", "r", "--format", "jsonl", "--scope", "batch", env=env)
    assert [json.loads(line)["scope"] for line in batch.stdout.splitlines()] == ["batch"] * 5

    flags = fitwatch("export", "r", "--url", server.url, "--token", "s3cret")
    assert flags.returncode == 0 and flags.stdout == expected_csv


def test_export_says_why_it_failed(start_server):
    server = start_server(token="s3cret", protect_reads=True)
    missing = fitwatch("export", "nope", env={"FITWATCH_URL": server.url, "FITWATCH_TOKEN": "s3cret"})
    assert missing.returncode == 1 and b"HTTP 404" in missing.stderr and b"not found" in missing.stderr
    refused = fitwatch("export", "r", env={"FITWATCH_URL": server.url, "FITWATCH_TOKEN": "wrong"})
    assert refused.returncode == 1 and b"HTTP 401" in refused.stderr
    away = fitwatch("export", "r", env={"FITWATCH_URL": f"http://127.0.0.1:{free_port()}"})
    assert away.returncode == 1 and b"cannot reach" in away.stderr


def test_a_stop_ends_open_event_streams_and_long_polls_cleanly(tmp_path):
    """A browser's stream and a training's long-poll are open: SIGTERM still stops the
    server without cancelling them after a grace period (an error and a traceback)."""
    import threading

    port = free_port()
    # Contact older than a sixth of FITWATCH_STALE_AFTER is recorded by the next poll.
    proc = start([shutil.which("fitwatch"), "serve", "--port", str(port)], tmp_path, {"FITWATCH_STALE_AFTER": "0.6"})
    url = f"http://127.0.0.1:{port}"
    events: list[str] = []
    answers = {}
    threads = []
    try:
        wait_healthy(url, proc)
        created = httpx.post(f"{url}/api/v1/runs", json={"id": "r"}).json()

        def stream() -> None:
            with httpx.stream("GET", f"{url}/api/v1/runs/r/events", timeout=60) as response:
                events.extend(line for line in response.iter_lines() if line.startswith("event:"))
            answers["stream ended"] = True

        def long_poll() -> None:
            answers["poll"] = httpx.get(
                f"{url}/api/v1/runs/r/commands?status=pending&wait=30", headers=TRAINING, timeout=60
            )

        threads = [threading.Thread(target=stream), threading.Thread(target=long_poll)]
        for t in threads:
            t.start()
        # The long-poll has read once when the run's last contact moves; the stream, when it has its first event.
        wait_for(lambda: httpx.get(f"{url}/api/v1/runs/r").json()["last_seen"] != created["last_seen"], 30)
        wait_for(lambda: events, 30, "the stream's first event")
    finally:
        err = stop(proc)
    for t in threads:
        t.join(60)
    assert events == ["event: run"] and answers["stream ended"]  # it ended with the server
    assert answers["poll"].status_code == 200 and answers["poll"].json() == []
    assert "ERROR" not in err and "Traceback" not in err, err


def test_what_a_started_server_holds_is_out_of_the_cycle_collectors_sight(server):
    """Modules, tables and built statements live as long as the process: frozen, they are
    not scanned by every full collection, which under load stopped all threads for 115-150 ms."""
    import gc

    assert gc.get_freeze_count() > 100_000


def test_fitwatch_alone_prints_help():
    done = fitwatch()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"usage: fitwatch") and b"serve" in done.stdout and b"export" in done.stdout
    assert done.stderr == b""


def test_fitwatch_version_is_the_package_version():
    from importlib.metadata import version

    done = fitwatch("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"fitwatch {version('fitwatch')}\n".encode(), b"")


def test_export_into_a_pipe_closed_early_ends_quietly(start_server):
    server = start_server()
    with server.client() as api:
        create_run(api, "r")
        for start in range(0, 20_000, 5_000):  # some 2 MB of JSON lines: far more than a pipe holds
            api.post("/api/v1/runs/r/logs", json={"records": make_records(5_000, start=start)}).raise_for_status()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FITWATCH_")}
    done = subprocess.run(
        ["bash", "-c", 'fitwatch export r --format jsonl | head -1; echo "exit ${PIPESTATUS[0]}" >&2'],
        env={**clean, "FITWATCH_URL": server.url},
        capture_output=True,
        timeout=120,
    )
    assert json.loads(done.stdout)["seq"] == 0
    assert done.stderr in (b"exit 0\n", b"exit 141\n"), done.stderr  # 141: ended by SIGPIPE, as `yes | head -1`


def test_export_into_a_missing_folder_is_one_line(start_server, tmp_path):
    server = start_server()
    with server.client() as api:
        create_run(api, "r")
    target = tmp_path / "missing" / "r.csv"
    done = fitwatch("export", "r", "-o", str(target), env={"FITWATCH_URL": server.url})
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.decode().splitlines() == [f"fitwatch export: cannot write {target}: No such file or directory"]


def test_export_csv_has_one_row_a_step_with_the_rate_in_its_column(start_server):
    from tests.server.test_export import batch_records_with_rate_changes

    server = start_server()
    with server.client() as api:
        create_run(api, "r")
        api.post("/api/v1/runs/r/logs", json={"records": batch_records_with_rate_changes()}).raise_for_status()
    done = fitwatch("export", "r", "--scope", "batch", env={"FITWATCH_URL": server.url})
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        "step,epoch,loss,lr,lr.critic",
        "0,0,0.9,0.003,0.01",
        "1,0,0.8,,",
        "2,1,0.7,0.0015,",
        "3,1,,,0.005",
    ]


NOT_SPOOL_FILES = {
    "text without a newline": b"hello",
    "a JSON line": b'{"a": 1}\n',
    "a spool header then text": b'{"fitwatch_spool": 1, "url": "http://127.0.0.1:1", "run_id": "r"}\nhello\n',
    "a spool header then a list": b'{"fitwatch_spool": 1, "url": "http://127.0.0.1:1", "run_id": "r"}\n[1]\n',
}


@pytest.mark.parametrize("content", list(NOT_SPOOL_FILES.values()), ids=list(NOT_SPOOL_FILES))
def test_sync_of_a_file_that_is_not_a_spool_file_says_so_and_leaves_it_alone(tmp_path, content):
    path = tmp_path / "notes.jsonl"
    path.write_bytes(content)
    done = fitwatch("sync", str(path))
    assert done.returncode == 1 and done.stdout == b""
    [line] = done.stderr.decode().splitlines()
    assert line.startswith(f"fitwatch sync: {path}") and "not a fitwatch spool file" in line, line
    assert path.read_bytes() == content


def test_sync_of_a_folder_says_it_is_one(tmp_path):
    done = fitwatch("sync", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [f"fitwatch sync: {tmp_path} is a folder, not a fitwatch spool file"]
