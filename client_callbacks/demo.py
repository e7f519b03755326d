"""A short example training to watch: a small Keras MLP on synthetic data.

`fitwatch demo` runs it against the server it starts; on its own:

    python -m client_callbacks.demo [--url http://127.0.0.1:8000] [--epochs 20]

Each batch sleeps a little so that the curves grow at a pace a person can follow, and
ReduceLROnPlateau changes the learning rate now and then. Stop it or change its rate
from the dashboard.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m client_callbacks.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="server (FITWATCH_URL, default http://127.0.0.1:8000)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.03, help="seconds each batch waits (default 0.03)")
    args = parser.parse_args(argv)

    # No start-up banners: TensorFlow prints its oneDNN notice whatever the log level.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    sys.excepthook = _quiet_interrupt(sys.excepthook)
    interrupted = _interrupt_at_batch_edge()
    import keras
    import numpy as np

    from .keras import RemoteCallback

    class Pace(keras.callbacks.Callback):
        """Waits a little each batch; leaves fit at the batch edge after Ctrl-C."""

        def on_train_batch_end(self, batch, logs=None):
            self.on_test_batch_end(batch)
            time.sleep(args.pause)

        def on_test_batch_end(self, batch, logs=None):
            if interrupted.is_set():
                raise KeyboardInterrupt

    rng = np.random.default_rng(7)
    centers = rng.normal(scale=2.0, size=(4, 16))
    labels = rng.integers(0, 4, 4000)
    x = (centers[labels] + rng.normal(scale=2.5, size=(4000, 16))).astype("float32")

    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(4),
        ],
        name="demo-mlp",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.003),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callback = RemoteCallback(
        url=args.url, run_name="demo-mlp", project="demo", config={"dataset": "4 noisy gaussian blobs"}
    )
    print(f"training run {callback.run_id}: {callback.client.url}/runs/{callback.run_id}", flush=True)
    model.fit(
        x,
        labels,
        batch_size=32,
        epochs=args.epochs,
        validation_split=0.2,
        verbose=0,
        callbacks=[callback, keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2), Pace()],
    )
    model.evaluate(x, labels, verbose=0, callbacks=[callback, Pace()])
    print(f"demo training done: run {callback.run_id}")


def _interrupt_at_batch_edge() -> threading.Event:
    """The first Ctrl-C (or SIGINT from `fitwatch demo`) is kept for the next batch edge:
    raised inside TensorFlow's C++ code it can be lost or come out as another error. A
    second one interrupts at once."""
    interrupted = threading.Event()

    def handler(_signum, _frame):
        signal.signal(signal.SIGINT, signal.default_int_handler)
        interrupted.set()

    signal.signal(signal.SIGINT, handler)
    return interrupted


def _quiet_interrupt(previous):
    """Ctrl-C (or the demo stopping it) ends the training with one line, not a traceback."""

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            print("demo training interrupted", file=sys.stderr)
        else:
            previous(exc_type, exc, tb)

    return hook


if __name__ == "__main__":
    main()
