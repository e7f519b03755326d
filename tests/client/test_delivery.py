"""Delivery when the server is absent, killed, silent or refusing: training goes on,
every batch lands exactly once, and what could not be sent waits in the spool."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import httpx
import pytest

from client_callbacks import FitwatchWarning, MonitorClient, RemoteCallback
from monitor_server.config import Settings
from tests.support.api import batch_steps, records
from tests.support.servers import free_port, serve
from tests.support.training import STEPS, AtStep, data, fit, program, tiny_model

pytestmark = pytest.mark.slow  # real Keras fits, in this process and as programs

UNREACHABLE = "fitwatch: cannot deliver to"


def messages(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, FitwatchWarning)]


def assert_each_batch_once(url: str, run_id: str, total: int) -> None:
    with httpx.Client(base_url=url, timeout=30) as api:
        stored = [r for r in records(api, run_id) if r["scope"] == "batch" and "loss" in r["metrics"]]
        assert sorted(r["step"] for r in stored) == list(range(total))
        assert len({r["seq"] for r in stored}) == total


def test_server_absent_at_start_then_started_mid_fit(database_url, spool_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = []

    def start_server(step):
        cm = serve(Settings(database_url=database_url))
        cm.__enter__()
        started.append(cm)

    cb = RemoteCallback(url=url, spool_dir=spool_dir, flush_interval=0.1)
    # The port is taken only when the server starts: bind it now so the test owns it.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr("tests.support.servers.free_port", lambda: port)
                fit([AtStep({15: start_server}, pause=0.02), cb], epochs=4)
            assert_each_batch_once(url, cb.run_id, 4 * STEPS)
            assert httpx.get(f"{url}/api/v1/runs/{cb.run_id}").json()["status"] == "finished"
        finally:
            for cm in started:
                cm.__exit__(None, None, None)
    assert len([m for m in messages(caught) if m.startswith(UNREACHABLE)]) == 1
    assert cb.spool_file is None and not list(spool_dir.glob("*.jsonl"))


def test_server_killed_mid_fit_and_restarted(server_process, spool_dir):
    server_process.start()
    cb = RemoteCallback(url=server_process.url, spool_dir=spool_dir, flush_interval=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(
            [AtStep({8: lambda s: server_process.kill(), 22: lambda s: server_process.start()}, pause=0.03), cb],
            epochs=4,
        )
    assert_each_batch_once(server_process.url, cb.run_id, 4 * STEPS)
    assert httpx.get(f"{server_process.url}/api/v1/runs/{cb.run_id}").json()["status"] == "finished"
    assert len([m for m in messages(caught) if m.startswith(UNREACHABLE)]) == 1


def test_server_never_up_spools_and_sync_uploads_once(database_url, spool_dir, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    cb = RemoteCallback(url=url, run_id="offline", spool_dir=spool_dir, flush_timeout=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit([cb], epochs=2)
    spool = cb.spool_file
    assert spool is not None and spool.exists()
    [unreachable, left] = messages(caught)
    assert unreachable.startswith(UNREACHABLE)
    assert f"could not be delivered to {url}" in left and f"fitwatch sync {spool}" in left

    copy = tmp_path / "copy.jsonl"
    shutil.copy(spool, copy)
    port = int(url.rsplit(":", 1)[1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tests.support.servers.free_port", lambda: port)
        with serve(Settings(database_url=database_url)):
            first = fitwatch("sync", str(spool))
            assert first.returncode == 0, first.stderr
            assert "records stored, 0 already there" in first.stdout
            synced = spool.with_name(spool.name + ".synced")
            assert not spool.exists() and synced.exists()  # kept, marked uploaded
            again = fitwatch("sync", str(spool))
            assert again.returncode == 0 and f"already uploaded ({synced})" in again.stdout
            replay = fitwatch("sync", str(copy))
            assert replay.returncode == 0 and "0 records stored" in replay.stdout
            cleaned = fitwatch("sync", "--clean", "--dir", str(spool_dir))
            assert cleaned.returncode == 0 and "removed 1 uploaded spool file" in cleaned.stdout
            assert not synced.exists() and copy.with_name("copy.jsonl.synced").exists()  # another folder

            assert_each_batch_once(url, "offline", 2 * STEPS)
            run = httpx.get(f"{url}/api/v1/runs/offline").json()
            assert run["status"] == "finished" and run["config"]["fit"]["epochs"] == 2


def fitwatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monitor_server.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_later_fit_sends_what_an_earlier_one_spooled(database_url, spool_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = RemoteCallback(url=url, spool_dir=spool_dir, flush_timeout=0.2)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        fit([first], epochs=1)
    assert first.spool_file.exists()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tests.support.servers.free_port", lambda: port)
        with serve(Settings(database_url=database_url)):
            second = RemoteCallback(url=url, spool_dir=spool_dir)
            fit([AtStep({}, pause=0.05), second], epochs=1)  # time for the backlog
            assert_each_batch_once(url, second.run_id, STEPS)
            assert_each_batch_once(url, first.run_id, STEPS)
            assert httpx.get(f"{url}/api/v1/runs/{first.run_id}").json()["status"] == "finished"
    assert not list(spool_dir.glob("*.jsonl"))
    # The file the warning named is kept as uploaded: the command it gave still works.
    again = fitwatch("sync", str(first.spool_file))
    assert again.returncode == 0 and "already uploaded" in again.stdout


def test_sync_all_uploads_every_file_left_in_the_spool_folder(database_url, spool_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    left = []
    for _ in range(2):
        cb = RemoteCallback(url=url, spool_dir=spool_dir, flush_timeout=0.2)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            fit([cb], epochs=1)
        left.append(cb)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tests.support.servers.free_port", lambda: port)
        with serve(Settings(database_url=database_url)):
            done = fitwatch("sync", "--all", "--dir", str(spool_dir))
            assert done.returncode == 0, done.stderr
            assert done.stdout.count("records stored") == 2
            for cb in left:
                assert_each_batch_once(url, cb.run_id, STEPS)
            nothing = fitwatch("sync", "--all", "--dir", str(spool_dir))
            assert nothing.returncode == 0 and "nothing to upload" in nothing.stdout
    down = fitwatch("sync", str(left[0].spool_file) + ".synced")
    assert down.returncode == 0 and "already uploaded" in down.stdout


class SilentServer:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_server_that_never_answers_costs_fit_nothing_and_memory_stays_bounded(spool_dir):
    silent = SilentServer()
    try:
        cb = RemoteCallback(url=silent.url, spool_dir=spool_dir, flush_interval=0.05, flush_timeout=0.5)
        cb.client.timeout = 0.5  # each request gives up after 0.5 s
        peak = []
        probe = AtStep({s: (lambda s: peak.append(cb.client.buffered)) for s in range(30 * STEPS)}, pause=0.01)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit([probe, cb], epochs=30)
    finally:
        silent.close()
    # Every batch ran (the fit never waited on the server), and records moved to the spool
    # while the server hung: memory held about one request timeout's worth (0.5 s, some 50
    # batches of >= 10 ms), never a large part of the run's 300.
    assert len(peak) == 30 * STEPS
    assert max(peak) < 150
    assert cb.spool_file is not None
    assert len([m for m in messages(caught) if m.startswith(UNREACHABLE)]) == 1
    ops = [line for line in cb.spool_file.read_text().splitlines()[1:]]
    assert sum(line.count('"seq"') for line in ops) == 30 * STEPS + 30 + 1  # batches, epochs, lr


def test_refused_request_is_dropped_and_reported_once(server, api, spool_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with MonitorClient(url=server.url, spool_dir=spool_dir, flush_interval=0.05) as client:
            for step in range(3):
                client.log("batch", step, {"x" * 300: 1.0})  # names are at most 200 characters
                assert client.flush(5)
            client.log("batch", 3, {"loss": 1.0})
    refused = [m for m in messages(caught) if "refused" in m]
    assert len(refused) == 1 and "HTTP 422" in refused[0]
    assert batch_steps(api, client.run_id) == [3]
    assert not list(Path(spool_dir).glob("*.jsonl"))


def test_unwritable_spool_costs_a_warning_not_the_training(tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    cb = RemoteCallback(url=f"http://127.0.0.1:{free_port()}", spool_dir=blocked, flush_timeout=0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit([cb], epochs=2)
    found = messages(caught)
    assert any(m.startswith(UNREACHABLE) for m in found)
    assert any("cannot write the spool file" in m for m in found)
    assert any(m.endswith("they are lost") and m.startswith(f"fitwatch: {2 * STEPS + 2 + 1} records") for m in found)


def test_two_writers_on_one_run_never_merge_records(server, api, spool_dir):
    """Two processes logging to one run id at the same time (or a clock that stepped back)
    keep every record: seqs are unique per writer, not taken from the clock."""
    clients = [
        MonitorClient(url=server.url, run_id="shared", spool_dir=spool_dir, flush_interval=0.05) for _ in range(2)
    ]
    for client in clients:
        client.start()
    for step in range(3000):
        for client in clients:
            client.log("batch", step, {"loss": 1.0 / (step + 1)})
    for client in clients:
        assert client.close() is None
    stored = [r for r in records(api, "shared") if r["scope"] == "batch"]
    assert len(stored) == 6000 and len({r["seq"] for r in stored}) == 6000


CRASH_AFTER_APPLY = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
import httpx
from tests.support.training import AtStep, fit, tiny_model
from client_callbacks import RemoteCallback

url, server_pid = {url!r}, {server_pid}
cb = RemoteCallback(url=url, run_id="crash", spool_dir={spool!r}, flush_interval=0.05)

def command_then_server_dies(step):
    while httpx.get(f"{{url}}/api/v1/runs/crash").status_code != 200:
        time.sleep(0.01)
    httpx.post(f"{{url}}/api/v1/runs/crash/commands", json={{"type": "set_lr", "args": {{"value": 0.5}}}})
    while not cb.client.commands:
        time.sleep(0.01)
    os.kill(server_pid, signal.SIGKILL)  # the ack of what step 3 applies cannot be delivered

fit([AtStep({{3: command_then_server_dies, 5: lambda step: os.kill(os.getpid(), signal.SIGKILL)}}), cb], epochs=2)
"""


def test_a_command_applied_just_before_a_crash_is_not_applied_again_when_the_run_resumes(
    server_process, spool_dir, tmp_path
):
    server_process.start()
    script = tmp_path / "crash.py"
    root = str(Path(__file__).parents[2])
    script.write_text(
        CRASH_AFTER_APPLY.format(
            root=root, url=server_process.url, server_pid=server_process.proc.pid, spool=str(spool_dir)
        )
    )
    died = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True, text=True, timeout=300)
    assert died.returncode == -9, died.stderr
    server_process.proc.wait(30)  # killed by the training
    server_process.start()  # the same port, so the spool left behind is for this server
    with httpx.Client(base_url=server_process.url, timeout=30) as api:
        assert api.get("/api/v1/runs/crash/commands").json()[0]["status"] == "delivered"  # the ack never came

        resumed = RemoteCallback(url=server_process.url, run_id="crash", spool_dir=spool_dir, poll_interval=0.05)
        model = tiny_model()
        fit([AtStep({}, pause=0.02), resumed], epochs=2, model=model)
        assert float(model.optimizer.learning_rate) == pytest.approx(0.01)  # not applied a second time
        [command] = api.get("/api/v1/runs/crash/commands").json()
        assert (command["status"], command["step"]) == ("applied", 3)  # the crashed process's ack, delivered now
        assert command["message"] == "learning rate 0.01 -> 0.5 at step 3"


def where(caught) -> set[tuple[str, int]]:
    """The source lines fitwatch's warnings were shown at."""
    return {(w.filename, w.lineno) for w in caught if issubclass(w.category, FitwatchWarning)}


def test_warnings_during_fit_point_at_the_users_fit_call(tmp_path):
    cb = RemoteCallback(url=f"http://127.0.0.1:{free_port()}", spool_dir=tmp_path / "spool", flush_timeout=0.3)
    model = tiny_model()
    x, y = data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        model.fit(x, y, batch_size=32, epochs=2, callbacks=[cb], verbose=0)
    assert any(m.startswith(UNREACHABLE) for m in messages(caught))
    assert where(caught) == {(__file__, line)}


def test_a_warning_from_log_points_at_the_users_log_call(server_process, spool_dir):
    # The server runs in its own process: catch_warnings is process-wide and not thread-safe,
    # and a server thread entering and leaving one (FastAPI's encoder does) can undo it.
    server = server_process.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with MonitorClient(url=server.url, spool_dir=spool_dir, flush_interval=0.05) as client:
            client.log("batch", 0, {"x" * 300: 1.0})  # refused: names are at most 200 characters
            assert client.flush(5)
            line = inspect.currentframe().f_lineno + 1
            client.log("batch", 1, {"loss": 1.0})
    assert any("refused" in m for m in messages(caught)), [str(w.message) for w in caught]
    assert where(caught) == {(__file__, line)}


def test_warnings_at_close_point_at_the_users_close_call(tmp_path):
    client = MonitorClient(url=f"http://127.0.0.1:{free_port()}", spool_dir=tmp_path / "spool", flush_timeout=0.3)
    client.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        client.close()
    shown = messages(caught)
    assert any(m.startswith(UNREACHABLE) for m in shown) and any("fitwatch sync" in m for m in shown)
    assert where(caught) == {(__file__, line)}


def test_on_jax_warnings_wait_for_the_training_thread_and_point_at_the_fit_call(server, tmp_path):
    """On JAX, Keras runs the batch-end hooks on worker threads, where no line of the user's
    is on the stack: what they ran into (here the server refusing a metric name of 300
    characters) is shown from the training thread, at the fit call."""
    script = program(
        tmp_path,
        f"""
        import json, warnings
        import keras
        from client_callbacks import FitwatchWarning, RemoteCallback
        from tests.support.training import AtStep, data, tiny_model

        model, (x, y) = tiny_model(), data()
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=[keras.metrics.SparseCategoricalAccuracy("m" * 300)])
        cb = RemoteCallback(url={server.url!r}, spool_dir={str(tmp_path / "spool")!r}, flush_interval=0.05)
        slow = AtStep({{}}, pause=0.05)  # batches go on while the server answers
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=32, epochs=2, callbacks=[cb, slow], verbose=0)  # the fit call
        ours = [w for w in caught if issubclass(w.category, FitwatchWarning)]
        print(json.dumps([[w.filename, w.lineno, str(w.message)] for w in ours]))
        """,
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shown = json.loads(done.stdout.splitlines()[-1])
    line = next(i for i, text in enumerate(script.read_text().splitlines(), 1) if text.endswith("# the fit call"))
    assert any("refused" in message for _, _, message in shown), shown
    assert {(filename, lineno) for filename, lineno, _ in shown} == {(str(script), line)}
