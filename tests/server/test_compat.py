"""The stock `keras.callbacks.RemoteMonitor` posting to the server, in both its modes."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from tests.support.api import assert_error


def fit_with(callback, epochs: int = 3) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("float32")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=16, validation_split=0.25, verbose=0, callbacks=[callback])


@pytest.mark.parametrize("send_as_json", [False, True], ids=["form", "json"])
def test_remote_monitor_epochs_are_stored(api, server, send_as_json):
    monitor = keras.callbacks.RemoteMonitor(
        root=server.url, path="/publish/epoch/end/?run=rm&project=compat", send_as_json=send_as_json
    )
    fit_with(monitor)
    run = api.get("/api/v1/runs/rm").json()
    assert run["project"] == "compat"
    assert set(run["latest"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    loss = api.get("/api/v1/runs/rm/series/epoch/loss").json()
    assert loss["steps"] == [0, 1, 2] and all(isinstance(v, float) for v in loss["values"])


def test_remote_monitor_default_run_and_nan(api):
    body = {"data": '{"epoch": 0, "loss": NaN, "acc": 0.5}'}
    assert api.post("/publish/epoch/end/", data=body).json() == {"accepted": 1, "run_id": "remote-monitor"}
    assert api.post("/publish/epoch/end/", data={"data": '{"epoch": 1, "loss": 0.25}'}).status_code == 200
    assert api.get("/api/v1/runs/remote-monitor/series/epoch/loss").json()["values"] == ["NaN", 0.25]


def test_remote_monitor_bad_posts_are_4xx(api):
    assert_error(api.post("/publish/epoch/end/", data={"other": "{}"}), 422)
    assert_error(api.post("/publish/epoch/end/", data={"data": "{nope"}), 400)
    assert_error(api.post("/publish/epoch/end/", data={"data": '{"epoch": 0, "loss": "high"}'}), 422)
    assert_error(api.post("/publish/epoch/end/", data={"data": '{"epoch": -1}'}), 422)
    assert_error(api.post("/publish/epoch/end/", data={"data": "[1]"}), 422)
    assert_error(api.post("/publish/epoch/end/?run=bad%20name", json={"epoch": 0}), 422)
    assert api.get("/api/v1/runs").json() == []


def test_concurrent_posts_to_one_run_are_each_stored(server):
    """Several RemoteMonitors posting to one run at once: each post gets its own seq."""
    import threading

    import httpx

    def post_epochs(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for epoch in range(10):
                answer = client.post("/publish/epoch/end/?run=shared", json={"epoch": epoch, "worker": worker})
                assert answer.status_code == 200 and answer.json()["accepted"] == 1

    threads = [threading.Thread(target=post_epochs, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with httpx.Client(base_url=server.url, timeout=30) as api:
        stored = [line for line in api.get("/api/v1/runs/shared/export.jsonl").text.splitlines() if line]
    assert len(stored) == 80


def test_an_integral_epoch_number_is_an_epoch(api):
    assert api.post("/publish/epoch/end/?run=r", json={"epoch": 2.0, "loss": 0.5}).status_code == 200
    assert api.get("/api/v1/runs/r/series/epoch/loss").json()["steps"] == [2]
    assert_error(api.post("/publish/epoch/end/?run=r", json={"epoch": 2.5, "loss": 0.5}), 422)
    assert_error(api.post("/publish/epoch/end/?run=r"), 400)
