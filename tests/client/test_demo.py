"""`fitwatch demo`: a server and an example training under one command, with a quiet
console, that stops both on Ctrl-C, SIGTERM or SIGHUP and leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text

from tests.support.servers import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # `fitwatch demo`: a server and a real training, as processes

NOISE = ("INFO:", "GET /", "POST /", "oneDNN", "absl::InitializeLog", "cpu_feature_guard", "Traceback")


def demo(tmp_path, port: int, *args: str) -> subprocess.Popen:
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    command = [
        sys.executable,
        "-m",
        "monitor_server.cli",
        "demo",
        "--port",
        str(port),
        "--db",
        db,
        "--no-browser",
        *args,
    ]
    env = {**os.environ, "FITWATCH_SPOOL_DIR": str(tmp_path / "spool")}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def the_run(tmp_path) -> tuple[str, str]:
    with create_engine(f"sqlite:///{tmp_path / 'demo.db'}").connect() as conn:
        return conn.execute(text("SELECT status, reason FROM runs WHERE name = 'demo-mlp'")).one()


def test_fitwatch_demo_serves_and_trains_a_run_and_says_only_what_matters(tmp_path):
    port = free_port()
    proc = demo(tmp_path, port, "--epochs", "2", "--exit")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"fitwatch dashboard: http://127.0.0.1:{port}" in out and "demo training done" in out
    assert f"http://127.0.0.1:{port}/runs/" in out  # where to watch the run
    assert not [line for line in (out + err).splitlines() if any(n in line for n in NOISE)], out + err
    assert the_run(tmp_path) == ("finished", "all 2 epochs done")
    with create_engine(f"sqlite:///{tmp_path / 'demo.db'}").connect() as conn:
        scopes = dict(conn.execute(text("SELECT scope, count(*) FROM series GROUP BY scope")).all())
    # System samples come every 10 s: a demo that ran that long (a busy machine) has them too.
    assert {"batch", "epoch", "eval"} <= set(scopes) <= {"batch", "epoch", "eval", "system"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_fitwatch_demo_stops_its_server_and_training_on(sig, tmp_path):
    port = free_port()
    proc = demo(tmp_path, port, "--epochs", "500")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _training(url), 180, "the demo to train")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) == 2  # the server and the training
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the port is free for the next demo
    assert the_run(tmp_path) == ("interrupted", "KeyboardInterrupt")  # the training ended its run
    assert "Traceback" not in err and "ERROR" not in err, err


def _training(url: str) -> bool:
    try:
        runs = httpx.get(f"{url}/api/v1/runs", timeout=2).json()
        return bool(runs) and bool(httpx.get(f"{url}/api/v1/runs/{runs[0]['id']}/series", timeout=2).json())
    except httpx.HTTPError:
        return False


class OtherServer:
    """A fitwatch server of someone else's, on its own database, holding `port`."""

    def __init__(self, tmp_path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        db = f"sqlite:///{tmp_path / 'other.db'}"
        command = [sys.executable, "-m", "monitor_server", "--port", str(port), "--db", db, "--log-level", "warning"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._healthy, 60, "the other server")

    def _healthy(self) -> bool:
        assert self.proc.poll() is None, "the other server did not start"
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def runs(self) -> list[dict]:
        return httpx.get(f"{self.url}/api/v1/runs", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def test_a_demo_on_a_port_that_is_taken_says_so_in_one_line_and_trains_nowhere(tmp_path):
    port = free_port()
    other = OtherServer(tmp_path, port)
    try:
        proc = demo(tmp_path, port, "--epochs", "1", "--exit")
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, out + err
        assert err.splitlines() == [f"fitwatch demo: port {port} is taken; choose another with --port"]
        assert out == ""
        assert other.runs() == []  # nothing trained into the other server
    finally:
        other.stop()
    assert not (tmp_path / "demo.db").exists()


def test_a_demo_on_the_default_port_moves_to_a_free_one_when_it_is_taken(tmp_path):
    with socket.socket() as probe:
        free = probe.connect_ex(("127.0.0.1", 8000)) != 0
    other = OtherServer(tmp_path, 8000) if free else None  # else something holds it already
    try:
        db = f"sqlite:///{tmp_path / 'demo.db'}"
        command = [sys.executable, "-m", "monitor_server.cli", "demo", "--db", db, "--no-browser", "--epochs", "1"]
        env = {**os.environ, "FITWATCH_SPOOL_DIR": str(tmp_path / "spool")}
        proc = subprocess.run([*command, "--exit"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        moved = re.search(r"port 8000 is taken: the dashboard is on port (\d+) instead", proc.stdout)
        assert moved and int(moved[1]) != 8000, proc.stdout
        assert f"fitwatch dashboard: http://127.0.0.1:{moved[1]}" in proc.stdout
        assert the_run(tmp_path) == ("finished", "all 1 epochs done")
        assert other is None or other.runs() == []
    finally:
        if other is not None:
            other.stop()
