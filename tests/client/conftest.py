"""Client fixtures: a real server (in a thread, or as its own process that a test can
kill), a tiny Keras model on synthetic data, and callbacks that act at a given step."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from tests.conftest import ServerProcess, wait_for

STEPS = 10  # batches an epoch in `data()`: 320 samples of 32
ROOT = Path(__file__).parents[2]


def program(tmp_path: Path, body: str) -> Path:
    """`body` (indented as in a test) as the program `train.py`, which imports this checkout."""
    script = tmp_path / "train.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(body))
    return script


@pytest.fixture
def database_url(tmp_path) -> str:
    """Client tests run on SQLite only; the server suite covers PostgreSQL."""
    return f"sqlite:///{tmp_path / 'fitwatch.db'}"


@pytest.fixture
def spool_dir(tmp_path) -> Path:
    return tmp_path / "spool"


def data(samples: int = 32 * STEPS, nan: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 8)).astype("float32")
    if nan:
        x[:] = np.nan
    return x, rng.integers(0, 3, samples)


def tiny_model(optimizer: keras.optimizers.Optimizer | None = None, activation: str | None = "relu") -> keras.Model:
    """Dense 8 -> 3. With `activation=None` a NaN input gives a NaN loss (relu would turn
    it into 0)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation=activation), keras.layers.Dense(3)])
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def fit(callbacks: list, epochs: int = 3, model: keras.Model | None = None, **kwargs) -> keras.Model:
    model = model or tiny_model()
    x, y = kwargs.pop("data", None) or data()
    model.fit(x, y, batch_size=32, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False, **kwargs)
    return model


class AtStep(keras.callbacks.Callback):
    """Calls `action(step)` on the training thread before the given global train steps."""

    def __init__(self, actions: dict[int, Callable[[int], None]], pause: float = 0.0) -> None:
        super().__init__()
        self.actions = actions
        self.pause = pause
        self.step = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.step in self.actions:
            self.actions[self.step](self.step)
        self.step += 1
        if self.pause:
            time.sleep(self.pause)  # stretch the training so that the network has time to act


def send_and_wait(api: httpx.Client, cb, command: dict) -> dict:
    """Issue a command and hold the training (this runs on its thread) until the client
    has received it, so the test knows at which batch edge it takes effect."""
    wait_for(lambda: api.get(f"/api/v1/runs/{cb.run_id}").status_code == 200, what="the run to exist")
    response = api.post(f"/api/v1/runs/{cb.run_id}/commands", json=command)
    assert response.status_code == 201, response.text
    wait_for(lambda: response.json()["id"] in cb.client.commands.seen, what="the command to reach the client")
    return response.json()


@pytest.fixture
def server_process(database_url: str) -> Iterator[ServerProcess]:
    process = ServerProcess(database_url)
    yield process
    process.stop()


def batch_steps(api: httpx.Client, run_id: str, name: str = "loss") -> list[int]:
    body = api.get(f"/api/v1/runs/{run_id}/series/batch/{name}", params={"max_points": 100000}).json()
    return body["steps"]


def records(api: httpx.Client, run_id: str) -> list[dict]:
    """Every stored record of the run, from the JSONL export."""
    import json

    return [json.loads(line) for line in api.get(f"/api/v1/runs/{run_id}/export.jsonl").text.splitlines()]
