"""A real training at full speed, as its own process, for tests that watch or steer it:

    python -m tests.support.trainer URL RUN_ID [--epochs N] [--steps N] [--at STEP COMMAND] [--report FILE]

The backend is `KERAS_BACKEND`'s. Nothing slows the training down. `--at STEP COMMAND`
issues COMMAND (JSON) to the run just before global step STEP and holds that step until
the callback has received it, so the test knows the batch edge where it takes effect.
`--report FILE` writes what the process saw as JSON: the threads that ran the batch-end
hooks, the optimizer's final learning rate, the knob and the History. `--knob` puts a
`Scale` layer on the logits whose non-trainable weight is the knob `scale` (0 makes every
loss ln 3); `--action` registers an action `note`; `--schedule` makes the rate a
`LearningRateSchedule`; `--unsaveable` adds a layer that `model.save` refuses, as Keras
refuses a layer made with an argument it cannot serialize.
"""

from __future__ import annotations

import argparse
import json
import os
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import httpx
import keras
import numpy as np

from client_callbacks import RemoteCallback
from tests.support.training import send_and_wait


class IssueAt(keras.callbacks.Callback):
    """Issues commands at given global steps and waits until the callback holds them."""

    def __init__(self, url: str, callback: RemoteCallback, plan: dict[int, list[dict]]) -> None:
        super().__init__()
        self.url, self.callback, self.plan, self.step = url, callback, plan, 0

    def on_train_batch_begin(self, batch, logs=None):
        commands = self.plan.get(self.step, ())
        if commands:
            with httpx.Client(base_url=self.url) as api:
                for command in commands:
                    send_and_wait(api, self.callback, command, timeout=60)
        self.step += 1


class Scale(keras.layers.Layer):
    """Multiplies its input by a non-trainable weight: a knob a compiled step reads."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", trainable=False, name="scale")

    def call(self, inputs):
        return inputs * self.scale


class Unsaveable(keras.layers.Layer):
    """Made with an argument Keras cannot serialize, so that saving the model fails."""

    def __init__(self, tag: object, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tag = tag

    def call(self, inputs):
        return inputs


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
    parser.add_argument("--project", default="default")
    parser.add_argument("--knob", action="store_true")
    parser.add_argument("--action", action="store_true")
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--schedule", action="store_true")
    parser.add_argument("--unsaveable", action="store_true")
    parser.add_argument("--system-interval", type=float, default=10.0, help="seconds between system samples")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32 * args.steps, 8)).astype("float32")
    y = rng.integers(0, 3, len(x))
    keras.utils.set_random_seed(0)
    layers = [keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    model = keras.Sequential(
        layers + ([Unsaveable(object())] if args.unsaveable else []) + ([Scale()] if args.knob else [])
    )
    rate = keras.optimizers.schedules.ExponentialDecay(0.01, 1000, 0.5) if args.schedule else 0.01
    model.compile(
        optimizer=keras.optimizers.SGD(rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callback = RemoteCallback(
        url=args.url,
        run_id=args.run_id,
        run_name=args.run_id,
        project=args.project,
        flush_interval=0.1,
        knobs={"scale": model.layers[-1].scale} if args.knob else None,
        actions={"note": lambda model, step: f"noted {model.name} at step {step}"} if args.action else None,
        checkpoint_dir=args.checkpoint_dir,
        system_interval=args.system_interval,
    )
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
            "scale": float(keras.ops.convert_to_numpy(model.layers[-1].scale)) if args.knob else None,
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        }
        with open(args.report, "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    main()
