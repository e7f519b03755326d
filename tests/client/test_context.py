"""Where a run ran (host, versions, devices, command line, git commit) and what it used
(CPU, memory, GPUs), recorded by a real fit against a real server."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path

import keras
import psutil
import pytest

from client_callbacks import MonitorClient, RemoteCallback
from client_callbacks.context import redact_argv
from client_callbacks.sync import sync_file
from tests.support.api import records
from tests.support.training import AtStep, fit
from tests.support.waiting import wait_for


def git(repo, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository with one commit on branch `exp`, as the working directory."""
    if shutil.which("git") is None:
        pytest.fail("these tests need git on PATH")
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "exp")
    (path / "train.py").write_text("print('v1')\n")
    git(path, "add", "train.py")
    git(path, "commit", "-q", "-m", "v1")
    monkeypatch.chdir(path)
    return path


def context_of(api, run_id: str) -> dict:
    return api.get(f"/api/v1/runs/{run_id}").json()["config"]["context"]


@pytest.mark.slow
@pytest.mark.parametrize("dirty", [False, True])
def test_a_fit_records_the_commit_branch_and_dirty_flag_of_its_code(server, api, spool_dir, repo, dirty):
    if dirty:
        (repo / "train.py").write_text("print('v2, not committed')\n")
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, system_interval=None)
    fit([cb], epochs=1)
    context = context_of(api, cb.run_id)
    assert context["git"] == {"commit": git(repo, "rev-parse", "HEAD"), "branch": "exp", "dirty": dirty}
    assert context["host"] and context["os"] and context["python"] and context["argv"]
    assert context["packages"]["keras"] == keras.version()
    assert context["backend"] == keras.backend.backend() and context["devices"]


def slow_git(tmp_path, monkeypatch, go) -> Path:
    """A git that answers only once `go` exists; the file it touches when it starts."""
    ran = tmp_path / "git-ran"
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    fake.write_text(
        f'#!/bin/sh\ntouch {ran}\nwhile [ ! -e {go} ]; do sleep 0.05; done\nexec {shutil.which("git")} "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    return ran


@pytest.mark.slow
def test_the_training_does_not_wait_for_git(server, api, spool_dir, repo, tmp_path, monkeypatch):
    # A git that answers only once the training has run two batches: had the context been
    # read on the training thread, git would have timed out and the run had no commit.
    started = tmp_path / "training-started"
    slow_git(tmp_path, monkeypatch, started)
    monkeypatch.setattr("client_callbacks.context.GIT_TIMEOUT_S", 60.0)  # two batches may take seconds here
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, system_interval=None)
    fit([cb, AtStep({2: lambda _step: started.touch()})], epochs=1)
    assert context_of(api, cb.run_id)["git"]["commit"] == git(repo, "rev-parse", "HEAD")


def test_a_close_while_git_is_slow_spools_the_run_without_waiting_for_it(
    server, api, spool_dir, repo, tmp_path, monkeypatch
):
    go = tmp_path / "go"
    ran = slow_git(tmp_path, monkeypatch, go)
    monkeypatch.setattr("client_callbacks.context.GIT_TIMEOUT_S", 30.0)  # a very big repository
    client = MonitorClient(url=server.url, spool_dir=spool_dir, system_interval=None)
    client.start()
    client.log("eval", 0, {"a": 1.0})
    client.end("finished")
    wait_for(ran.exists, what="git to start")
    # Let git answer in a few seconds at the latest: a close that waited for it would spool
    # a create request that has the commit.
    release = threading.Timer(3.0, go.touch)
    release.start()
    try:
        spool = client.close(timeout=0.1)
    finally:
        release.cancel()
        go.touch()
    assert spool is not None and spool.exists()
    assert sync_file(spool).delivered
    context = context_of(api, client.run_id)
    assert "git" not in context  # spooled before git answered
    assert [r["metrics"] for r in records(api, client.run_id)] == [{"a": 1.0}]
    assert api.get(f"/api/v1/runs/{client.run_id}").json()["status"] == "finished"


def test_the_context_is_of_where_the_run_started_though_the_training_moves_on(
    server, api, spool_dir, repo, tmp_path, monkeypatch
):
    # The sender reads the context only once the training has moved to another directory
    # and changed its arguments: what is recorded is still where and how it started.
    moved = threading.Event()
    real = platform.platform
    monkeypatch.setattr("platform.platform", lambda *a, **k: moved.wait(30) and real(*a, **k))
    monkeypatch.setattr("sys.argv", ["train.py", "--lr", "0.1"])
    client = MonitorClient(url=server.url, spool_dir=spool_dir, system_interval=None)
    client.start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["other.py"])
    moved.set()
    client.end("finished")
    assert client.close() is None
    context = context_of(api, client.run_id)
    assert context["git"]["commit"] == git(repo, "rev-parse", "HEAD")
    assert context["argv"] == ["train.py", "--lr", "0.1"]


@pytest.mark.parametrize(
    "arg",
    [
        "--author",
        "--keyword",
        "--hotkeys",
        "http://h:8000/x?e=a@b.com",
        "https://github.com/a/b@v1",
        "https://h:8080/a@b",
    ],
)
def test_what_only_looks_like_a_secret_is_kept(arg):
    assert redact_argv(["train.py", arg, "value"]) == ["train.py", arg, "value"]


def test_a_url_password_is_hidden_up_to_its_host_and_a_no_flag_takes_no_value():
    assert redact_argv(["http://u:p@h/x?q=a@b", "--no-auth", "train.py"]) == [
        "http://u:***@h/x?q=a@b",
        "--no-auth",
        "train.py",
    ]


@pytest.mark.slow
def test_outside_a_repository_or_without_git_the_run_has_no_git_context(server, api, spool_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a repository
    outside = RemoteCallback(url=server.url, spool_dir=spool_dir, system_interval=None)
    fit([outside], epochs=1)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))  # no git at all
    no_git = RemoteCallback(url=server.url, spool_dir=spool_dir, system_interval=None)
    fit([no_git], epochs=1)
    for cb in (outside, no_git):
        context = context_of(api, cb.run_id)
        assert "git" not in context and context["host"]
        assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "finished"


def series_of(api, run_id: str) -> dict[str, dict]:
    """The run's system series by name; none before the run exists."""
    response = api.get(f"/api/v1/runs/{run_id}/series")
    return {s["name"]: s for s in response.json() if s["scope"] == "system"} if response.status_code == 200 else {}


@pytest.mark.slow
def test_a_fit_samples_its_cpu_and_memory_in_the_system_scope(server, api, spool_dir):
    """The training holds its first batch until three samples have arrived: a count, not a
    time, decides how long it runs."""
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, system_interval=0.2)

    def three_samples(_step):
        wait_for(lambda: series_of(api, cb.run_id).get("rss_mb", {}).get("count", 0) >= 3, what="3 samples")

    fit([AtStep({1: three_samples}), cb], epochs=1)
    found = series_of(api, cb.run_id)
    assert {"cpu_percent", "rss_mb", "memory_used_mb", "memory_percent"} <= set(found)
    assert not [name for name in found if name.startswith("gpu")]  # no NVML here: no GPU series, no error
    rss = api.get(f"/api/v1/runs/{cb.run_id}/series/system/rss_mb").json()
    assert rss["steps"][:3] == [0, 1, 2]
    assert all(30 < mb < psutil.virtual_memory().total / 2**20 for mb in rss["values"])  # a Keras process's size
    cpu = api.get(f"/api/v1/runs/{cb.run_id}/series/system/cpu_percent").json()["values"]
    assert all(0 <= value <= 100 * psutil.cpu_count() for value in cpu)
    total_mb = psutil.virtual_memory().total / 2**20
    used = api.get(f"/api/v1/runs/{cb.run_id}/series/system/memory_used_mb").json()["values"]
    assert all(0 < mb <= total_mb for mb in used)


@pytest.mark.slow
def test_sampling_off_logs_no_system_records(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, system_interval=None)
    fit([cb], epochs=1)
    assert series_of(api, cb.run_id) == {}


@pytest.mark.slow
def test_sampling_ends_with_the_run_and_takes_no_interval_but_a_positive_one(server, api, spool_dir):

    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, system_interval=0.05)
    fit([cb], epochs=1)
    assert not [t for t in threading.enumerate() if t.name == "fitwatch-system" and t.is_alive()]
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "finished"
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="system_interval"):
            RemoteCallback(url=server.url, spool_dir=spool_dir, system_interval=bad)
