"""RemoteCallback in a real `model.fit` against a real server: what arrives, in what
order, and how the run ends."""

from __future__ import annotations

import math
import subprocess
import sys

import httpx
import keras
import pytest

from client_callbacks import RemoteCallback
from tests.support.api import batch_steps, records
from tests.support.training import ROOT, STEPS, AtStep, data, fit, program, send_and_wait, tiny_model
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # real Keras fits, in this process and as programs


def run_status(api, run_id: str) -> str | None:
    response = api.get(f"/api/v1/runs/{run_id}")
    return response.json()["status"] if response.status_code == 200 else None


def callback(server, spool_dir, **kwargs) -> RemoteCallback:
    return RemoteCallback(url=server.url, spool_dir=spool_dir, **kwargs)


def test_every_batch_and_epoch_arrives_once_in_order(server, api, spool_dir):
    cb = callback(server, spool_dir, run_name="mlp", project="tests", config={"units": 8})
    fit([cb], epochs=3, validation_data=data(64))

    stored = records(api, cb.run_id)
    batches = [r for r in stored if r["scope"] == "batch" and "loss" in r["metrics"]]
    epochs = [r for r in stored if r["scope"] == "epoch"]
    assert [r["step"] for r in batches] == list(range(3 * STEPS))
    assert [r["epoch"] for r in batches] == [s // STEPS for s in range(3 * STEPS)]
    assert [r["step"] for r in epochs] == [0, 1, 2]
    # In seq order, each epoch record comes after its epoch's batches.
    order = [(r["scope"], r["step"]) for r in stored if r in batches or r in epochs]
    assert order.index(("epoch", 0)) > order.index(("batch", STEPS - 1))
    assert set(epochs[0]["metrics"]) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert epochs[0]["metrics"]["lr"] == 0.01

    run = api.get(f"/api/v1/runs/{cb.run_id}").json()
    assert (run["name"], run["project"], run["status"]) == ("mlp", "tests", "finished")
    assert run["reason"] == "all 3 epochs done"
    config = run["config"]
    assert config["units"] == 8
    assert config["fit"]["epochs"] == 3 and config["fit"]["steps"] == STEPS
    assert config["optimizer"]["class"] == "SGD" and config["optimizer"]["learning_rate"] == 0.01
    assert config["parameters"] == 8 * 8 + 8 + 8 * 3 + 3
    context = config["context"]
    assert context["packages"]["keras"] == keras.version() and context["backend"] == "tensorflow"
    assert context["devices"] and context["argv"] and context["python"]
    assert cb.spool_file is None and not list(spool_dir.glob("*.jsonl"))


def test_batch_frequency_logs_every_nth_global_step(server, api, spool_dir):
    cb = callback(server, spool_dir, batch_frequency=3)
    fit([cb], epochs=2)
    assert batch_steps(api, cb.run_id) == list(range(0, 2 * STEPS, 3))


def test_initial_epoch_sets_the_global_step(server, api, spool_dir):
    cb = callback(server, spool_dir)
    fit([cb], epochs=4, initial_epoch=2)
    assert batch_steps(api, cb.run_id) == list(range(2 * STEPS, 4 * STEPS))
    assert [r["step"] for r in records(api, cb.run_id) if r["scope"] == "epoch"] == [2, 3]


def test_second_fit_continues_the_run(server, api, spool_dir):
    cb = callback(server, spool_dir)
    model = fit([cb], epochs=1)
    fit([cb], epochs=1, model=model)
    assert batch_steps(api, cb.run_id) == list(range(2 * STEPS))
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "finished"


def test_evaluate_is_stored_in_eval_scope(server, api, spool_dir):
    cb = callback(server, spool_dir)
    model = fit([cb], epochs=1)
    model.evaluate(*data(64), callbacks=[cb], verbose=0)
    evals = [r for r in records(api, cb.run_id) if r["scope"] == "eval"]
    assert len(evals) == 1 and set(evals[0]["metrics"]) == {"loss", "accuracy"}
    assert evals[0]["step"] == STEPS
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "finished"


def test_nan_loss_is_stored_as_nan_and_terminate_on_nan_fails_the_run(server, api, spool_dir):
    cb = callback(server, spool_dir)
    fit([cb, keras.callbacks.TerminateOnNaN()], epochs=2, data=data(nan=True), model=tiny_model(activation=None))
    loss = api.get(f"/api/v1/runs/{cb.run_id}/series/batch/loss").json()
    assert loss["steps"] == [0] and loss["values"] == ["NaN"]
    run = api.get(f"/api/v1/runs/{cb.run_id}").json()
    assert run["status"] == "failed"
    assert run["reason"].startswith("TerminateOnNaN stopped training: loss was nan at step 0")


def test_early_stopping_is_named_as_the_reason(server, api, spool_dir):
    cb = callback(server, spool_dir)
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=100)
    fit([stop, cb], epochs=10)
    run = api.get(f"/api/v1/runs/{cb.run_id}").json()
    assert run["status"] == "finished"
    assert run["reason"] == "EarlyStopping stopped training at epoch 2: loss did not improve for 1 epochs"
    assert batch_steps(api, cb.run_id)[-1] == 2 * STEPS - 1


def test_unknown_callback_stopping_training_is_reported(server, api, spool_dir):
    class Halt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    cb = callback(server, spool_dir)
    fit([cb, Halt()], epochs=5)
    run = api.get(f"/api/v1/runs/{cb.run_id}").json()
    assert run["status"] == "finished"
    assert run["reason"] == "a callback set model.stop_training at epoch 1 (one of: Halt)"


def test_exception_in_fit_ends_the_run_failed(server, api, spool_dir):
    def boom(step):
        raise RuntimeError("boom")

    cb = callback(server, spool_dir)
    with pytest.raises(RuntimeError, match="boom"):
        fit([cb, AtStep({STEPS + 2: boom})], epochs=3)
    wait_for(lambda: run_status(api, cb.run_id) not in (None, "running"), what="the run to end")
    run = api.get(f"/api/v1/runs/{cb.run_id}").json()
    assert run["status"] == "failed" and run["reason"] == "fit raised an exception"
    assert batch_steps(api, cb.run_id) == list(range(STEPS + 2))


def test_an_epoch_that_ended_before_fit_raised_is_stored_and_a_stop_taken_is_acked(server, api, spool_dir):
    """A callback after ours raises at the end of epoch 1 (a checkpoint on a full disk):
    the epoch's record, held for what later callbacks add, and the stop the training took
    in that epoch still reach the server before the run ends failed."""

    class Broken(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise OSError("no space left for the checkpoint")

    cb = callback(server, spool_dir)
    stop = {}
    with pytest.raises(OSError, match="no space"):
        fit(
            [
                AtStep({STEPS + 4: lambda step: stop.update(send_and_wait(api, cb, {"type": "stop_training"}))}),
                cb,
                Broken(),
            ],
            epochs=3,
        )
    wait_for(lambda: run_status(api, cb.run_id) not in (None, "running"), what="the run to end")
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "failed"
    epochs = api.get(f"/api/v1/runs/{cb.run_id}/series/epoch/loss").json()["steps"]
    assert epochs == [0, 1]
    [command] = api.get(f"/api/v1/runs/{cb.run_id}/commands").json()
    assert (command["id"], command["status"], command["step"]) == (stop["id"], "applied", STEPS + 4)


@pytest.mark.parametrize(
    ("raise_", "status", "reason"),
    [
        ('ValueError("loss exploded")', "failed", "ValueError: loss exploded"),
        ("RuntimeError()", "failed", "RuntimeError"),  # no message: no dangling colon
        # Ctrl-C landing in C code can come out as another error caused by the interrupt.
        ("from_c(KeyboardInterrupt())", "interrupted", "KeyboardInterrupt"),
    ],
    ids=["error", "error-without-message", "interrupt-inside-another-error"],
)
def test_process_dying_in_fit_records_the_exception(server, api, spool_dir, tmp_path, raise_, status, reason):
    script = program(
        tmp_path,
        f"""
        from tests.support.training import AtStep, fit
        from client_callbacks import RemoteCallback

        def from_c(cause):
            # What CPython raises when a C function returns with an exception set.
            error = SystemError("<built-in function execute> returned a result with an exception set")
            error.__cause__ = error.__context__ = cause
            return error

        def boom(step):
            raise {raise_}

        cb = RemoteCallback(url={server.url!r}, run_id="dies", spool_dir={str(spool_dir)!r})
        fit([cb, AtStep({{5: boom}})], epochs=2)
        """,
    )
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" in done.stderr
    run = api.get("/api/v1/runs/dies").json()
    assert (run["status"], run["reason"]) == (status, reason)
    assert batch_steps(api, "dies") == list(range(5))


def test_a_process_leaving_while_the_watchdog_ends_the_run_waits_for_it(server_process, spool_dir, tmp_path):
    """fit raised and the program caught it and returned while the watchdog was still
    delivering the run's end to a slow server (on a daemon thread, which dies with the
    interpreter): the exit waits for that delivery."""
    import signal

    server_process.start()
    script = program(
        tmp_path,
        f"""
        from tests.support.training import AtStep, fit
        from client_callbacks import RemoteCallback

        def boom(step):
            print("in fit", flush=True)
            sys.stdin.readline()  # the server is stopped now
            raise RuntimeError("boom")

        cb = RemoteCallback(url={server_process.url!r}, run_id="left", spool_dir={str(spool_dir)!r}, flush_timeout=120)
        try:
            fit([cb, AtStep({{5: boom}})], epochs=2)
        except RuntimeError:
            pass
        cb._guard._done.wait(60)  # the watchdog has begun to end the run
        print("leaving", flush=True)
        """,
    )
    with subprocess.Popen(
        [sys.executable, str(script)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout.readline() == "in fit\n"
            server_process.proc.send_signal(signal.SIGSTOP)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "leaving\n"
        finally:
            server_process.proc.send_signal(signal.SIGCONT)
        assert proc.wait(180) == 0
    with httpx.Client(base_url=server_process.url) as api:
        run = api.get("/api/v1/runs/left").json()
        assert (run["status"], run["reason"]) == ("failed", "fit raised an exception")
        assert batch_steps(api, "left") == list(range(5))


def test_values_become_floats_and_non_finite_values_pass_through(server, api, spool_dir):
    import numpy as np

    from client_callbacks import MonitorClient

    with MonitorClient(url=server.url, spool_dir=spool_dir) as client:
        client.log("eval", 0, {"a": np.float32(0.5), "b": np.int64(3), "nan": float("nan"), "inf": np.inf, "text": "x"})
        client.log("eval", 1, {"ninf": -math.inf})
    stored = records(api, client.run_id)
    assert stored[0]["metrics"] == {"a": 0.5, "b": 3.0, "nan": "NaN", "inf": "Infinity"}
    assert stored[1]["metrics"] == {"ninf": "-Infinity"}
    assert api.get(f"/api/v1/runs/{client.run_id}").json()["status"] == "finished"


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (KeyboardInterrupt(), "interrupted", "KeyboardInterrupt"),
        (RuntimeError(), "failed", "RuntimeError"),
        (RuntimeError("disk full"), "failed", "RuntimeError: disk full"),
    ],
    ids=["interrupt", "error-without-message", "error"],
)
def test_a_client_left_by_an_exception_names_it(server, api, spool_dir, error, status, reason):
    from client_callbacks import MonitorClient

    client = MonitorClient(url=server.url, spool_dir=spool_dir)
    with pytest.raises(type(error)), client:
        raise error
    run = api.get(f"/api/v1/runs/{client.run_id}").json()
    assert (run["status"], run["reason"]) == (status, reason)


def test_import_does_not_load_keras_or_tensorflow():
    code = "import sys, client_callbacks; print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_model_name_is_the_default_run_name(server, api, spool_dir):
    cb = callback(server, spool_dir)
    model = tiny_model()
    model.name  # noqa: B018
    fit([cb], epochs=1, model=model)
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["name"] == model.name


def test_history_csvlogger_and_evaluate_equal_what_the_server_stores_and_exports(server, api, spool_dir, tmp_path):
    import csv
    import io

    cb = callback(server, spool_dir)
    log_file = tmp_path / "keras.csv"
    model = tiny_model()
    x, y = data()
    history = model.fit(
        x, y, batch_size=32, epochs=3, validation_data=data(64), verbose=0, shuffle=False,
        callbacks=[cb, keras.callbacks.CSVLogger(str(log_file))],
    )  # fmt: skip
    result = model.evaluate(*data(64), callbacks=[cb], verbose=0, return_dict=True)

    for name, values in history.history.items():
        stored = api.get(f"/api/v1/runs/{cb.run_id}/series/epoch/{name}").json()
        assert stored["values"] == [float(v) for v in values], name

    with open(log_file, newline="") as f:
        theirs = list(csv.DictReader(f))
    ours = list(csv.DictReader(io.StringIO(api.get(f"/api/v1/runs/{cb.run_id}/export.csv").text)))
    assert len(ours) == len(theirs) == 3
    for mine, keras_row in zip(ours, theirs, strict=True):
        for column, value in keras_row.items():
            assert float(mine[column]) == float(value), (column, mine, keras_row)

    [evaluation] = [r for r in records(api, cb.run_id) if r["scope"] == "eval"]
    assert evaluation["metrics"] == {k: float(v) for k, v in result.items()}
