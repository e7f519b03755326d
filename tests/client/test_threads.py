"""The hot path under concurrent callers: Keras dispatches `async_safe` batch-end hooks to
a pool of worker threads on backends that allow it (JAX), several at once and out of order."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

from client_callbacks import FitwatchWarning, MonitorClient, RemoteCallback
from tests.support.api import records
from tests.support.servers import free_port

ROOT = Path(__file__).parents[2]


def test_log_from_many_threads_while_problems_are_reported_never_raises(spool_dir):
    client = MonitorClient(url=f"http://127.0.0.1:{free_port()}", spool_dir=spool_dir)
    errors: list[BaseException] = []
    start = threading.Barrier(9)

    def log(worker: int) -> None:
        start.wait()
        try:
            for step in range(20_000):
                client.log("batch", step, {"loss": 0.5, "worker": worker})
        except BaseException as exc:  # anything raised here would have been raised into fit
            errors.append(exc)

    def report_problems() -> None:
        start.wait()
        for kind in range(5_000):
            client._notices.add(f"kind-{kind}", f"problem {kind}")  # what the sender thread does

    threads = [threading.Thread(target=log, args=(w,)) for w in range(8)] + [threading.Thread(target=report_problems)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can: races show
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitwatchWarning)
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    queued = list(client._sender._queue)
    assert len(queued) == 8 * 20_000 and len({r["seq"] for r in queued}) == 8 * 20_000


def test_the_last_loss_is_the_latest_steps_whatever_order_the_hooks_finish_in(server, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    cb.on_train_batch_end(7, {"loss": float("nan")})
    cb.on_train_batch_end(6, {"loss": 0.25})  # an earlier batch whose hook finished later
    step, loss = cb._last_loss
    assert step == 7 and math.isnan(loss)


@pytest.mark.slow
def test_jax_fit_streams_every_batch_and_applies_commands_with_batch_end_hooks_on_several_threads(
    server, api, tmp_path
):
    report = tmp_path / "report.json"
    at = [("5", {"type": "set_lr", "args": {"value": 0.05}}), ("250", {"type": "stop_training"})]
    command = [sys.executable, "-m", "tests.support.trainer", server.url, "jax-run", "--epochs", "50", "--steps", "100"]
    for step, body in at:
        command += ["--at", step, json.dumps(body)]
    command += ["--report", str(report)]
    env = {**os.environ, "KERAS_BACKEND": "jax", "FITWATCH_SPOOL_DIR": str(tmp_path / "spool")}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(report.read_text())
    assert seen["backend"] == "jax"
    assert seen["batch_end_threads"] >= 2  # Keras really ran the hooks on a pool
    assert seen["lr"] == pytest.approx(0.05)

    stored = records(api, "jax-run")
    batches = sorted(r["step"] for r in stored if r["scope"] == "batch" and "loss" in r["metrics"])
    assert batches == list(range(251))  # every batch up to the stop, each once
    by_type = {c["type"]: c for c in api.get("/api/v1/runs/jax-run/commands").json()}
    assert (by_type["set_lr"]["status"], by_type["set_lr"]["step"]) == ("applied", 5)
    assert (by_type["stop_training"]["status"], by_type["stop_training"]["step"]) == ("applied", 250)
    lr = api.get("/api/v1/runs/jax-run/series/batch/lr").json()
    assert (lr["steps"], lr["values"]) == ([0, 5], [0.01, 0.05])
    run = api.get("/api/v1/runs/jax-run").json()
    assert run["status"] == "stopped" and run["config"]["context"]["backend"] == "jax"
