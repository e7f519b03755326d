"""Training for the client tests: a tiny Keras model on synthetic data, a callback that acts
at given steps, and programs written out to run as their own process."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from tests.support.waiting import wait_for

STEPS = 10  # batches an epoch in `data()`: 320 samples of 32
ROOT = Path(__file__).parents[2]


def program(tmp_path: Path, body: str) -> Path:
    """`body` (indented as in a test) as the program `train.py`, which imports this checkout."""
    script = tmp_path / "train.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(body))
    return script


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


def send_and_wait(api: httpx.Client, cb, command: dict, timeout: float = 10.0) -> dict:
    """Issue a command and hold the training (this runs on its thread) until the client
    has received it, so the test knows at which batch edge it takes effect."""
    run = f"/api/v1/runs/{cb.run_id}"
    wait_for(lambda: api.get(run).status_code == 200, timeout, what="the run to exist")  # the sender creates it
    response = api.post(f"{run}/commands", json=command)
    assert response.status_code == 201, response.text
    wait_for(lambda: response.json()["id"] in cb.client.commands.seen, timeout, what="the command to reach the client")
    return response.json()
