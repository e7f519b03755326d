"""`fitwatch serve` and `python -m monitor_server` start a real server process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.helpers import make_records


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
