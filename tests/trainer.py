"""A real training at full speed, as its own process, for tests that watch or steer it:

    python -m tests.trainer URL RUN_ID [--epochs N] [--steps N] [--at STEP COMMAND] [--report FILE]

The backend is `KERAS_BACKEND`'s. Nothing slows the training down. `--at STEP COMMAND`
issues COMMAND (JSON) to the run just before global step STEP and holds that step until
the callback has received it, so the test knows the batch edge where it takes effect.
`--report FILE` writes what the process saw as JSON: the threads that ran the batch-end
hooks, the optimizer's final learning rate and the History.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import httpx
import keras
import numpy as np

from client_callbacks import RemoteCallback


class IssueAt(keras.callbacks.Callback):
    """Issues commands at given global steps and waits until the callback holds them."""

    def __init__(self, url: str, callback: RemoteCallback, plan: dict[int, list[dict]]) -> None:
        super().__init__()
        self.url, self.callback, self.plan, self.step = url, callback, plan, 0

    def on_train_batch_begin(self, batch, logs=None):
        for command in self.plan.get(self.step, ()):
            run = f"{self.url}/api/v1/runs/{self.callback.run_id}"
            deadline = time.monotonic() + 60
            while httpx.get(run).status_code != 200:  # the sender creates the run
                assert time.monotonic() < deadline, "the run was never created"
                time.sleep(0.01)
            httpx.post(f"{run}/commands", json=command).raise_for_status()
            while not self.callback.client.commands:
                assert time.monotonic() < deadline, "the command never reached the client"
                time.sleep(0.005)
        self.step += 1


class Threads(keras.callbacks.Callback):
    """Notes which threads run batch-end hooks (several, where Keras dispatches them async)."""

    async_safe = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[int] = set()

    def on_train_batch_end(self, batch, logs=None):
        self.seen.add(threading.get_ident())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("run_id")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100, help="batches an epoch")
    parser.add_argument("--at", nargs=2, action="append", default=[], metavar=("STEP", "COMMAND"))
    parser.add_argument("--report")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32 * args.steps, 8)).astype("float32")
    y = rng.integers(0, 3, len(x))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callback = RemoteCallback(url=args.url, run_id=args.run_id, run_name=args.run_id, flush_interval=0.1)
    plan: dict[int, list[dict]] = {}
    for step, command in args.at:
        plan.setdefault(int(step), []).append(json.loads(command))
    threads = Threads()
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=args.epochs,
        verbose=0,
        shuffle=False,
        callbacks=[IssueAt(args.url, callback, plan), threads, callback],
    )
    if args.report:
        report = {
            "backend": keras.backend.backend(),
            "batch_end_threads": len(threads.seen),
            "lr": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        }
        with open(args.report, "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    main()
