"""Real Keras programs, monitored, as a user writes them, on the backend of `KERAS_BACKEND`:

    python -m tests.support.programs URL REPORT PROGRAM...

Each program trains against the server at URL and reports what the process itself saw
(History, the optimizers' rates, the random states) under its name in the JSON file
REPORT, so that a test can hold the server's account against the training's own.

- `shuffled`: a `PyDataset` that shuffles with Python's `random` between epochs, fitted
  seeded three times: bare, monitored, and monitored with the server away.
- `gan`: keras.io's GAN whose `train_step` uses its own `d_optimizer` and `g_optimizer`
  (TensorFlow and PyTorch: JAX's stateless step carries only `model.optimizer`'s state),
  steered by rate commands at known steps; `gan_until_stopped` trains it, unsteered,
  until a stop command comes.
- `unknown_length`: a `tf.data` pipeline of 9 batches whose length Keras cannot know
  (`.filter`), with `steps_per_execution` 1 and, where the backend has it, 4.
- `stop_after_several`: a rate for the optimizer named before step 4, and a stop sent
  before step 8, with `steps_per_execution=4` (1 on PyTorch): steps 8 to 11 run in the
  same call.
- `epoch_logs`: callbacks after ours that add to the epoch's logs (LearningRateScheduler,
  one of the user's own).
- `full_disk`: the spool's disk (a small tmpfs the test mounted, FITWATCH_SPOOL_DIR is on
  it) fills up while the server is away.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import httpx
import keras
import numpy as np

from client_callbacks import RemoteCallback
from tests.support.training import send_and_wait

BACKEND = keras.backend.backend()
SPE = 1 if BACKEND == "torch" else 4  # PyTorch runs one step a call


def data(samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(samples, 8)).astype("float32"), rng.integers(0, 3, samples)


def classifier(steps_per_execution: int = 1) -> keras.Model:
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=steps_per_execution,
    )
    return model


def monitor(url: str, run_id: str, **kwargs) -> RemoteCallback:
    return RemoteCallback(url=url, run_id=run_id, run_name=run_id, flush_interval=0.05, **kwargs)


class Commands(keras.callbacks.Callback):
    """Sends commands to the run before given global steps (`batch` + `steps` an epoch
    times the epoch) and holds the step until the callback has received them, so that the
    test knows the batch edge where each takes effect."""

    def __init__(self, url: str, callback: RemoteCallback, plan: dict[int, list[dict]], steps: int) -> None:
        super().__init__()
        self.url, self.callback, self.plan, self.steps, self.epoch = url, callback, plan, steps, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        commands = self.plan.get(self.epoch * self.steps + batch, ())
        if commands:
            with httpx.Client(base_url=self.url) as api:
                for command in commands:
                    send_and_wait(api, self.callback, command, timeout=120)


def history(fitted: keras.callbacks.History) -> dict[str, list[float]]:
    return {k: [float(v) for v in vs] for k, vs in fitted.history.items()}


# -- shuffled ---------------------------------------------------------------------------------


class Shuffled(keras.utils.PyDataset):
    """Batches in an order that Python's `random` reshuffles after each epoch."""

    def __init__(self, x, y, batch: int) -> None:
        super().__init__()
        self.x, self.y, self.batch = x, y, batch
        self.order = list(range(len(x)))

    def __len__(self) -> int:
        return len(self.x) // self.batch

    def __getitem__(self, i):
        chosen = self.order[i * self.batch : (i + 1) * self.batch]
        return self.x[chosen], self.y[chosen]

    def on_epoch_end(self) -> None:
        random.shuffle(self.order)


class Slow(keras.callbacks.Callback):
    """Stretches each batch a little, so that the client's threads run during the fit."""

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.01)


def random_states() -> dict[str, str]:
    """Digests of every global random state a training may draw from."""
    from keras.src.backend.common import global_state

    states = {"python": repr(random.getstate()), "numpy": repr(np.random.get_state())}
    generator = global_state.get_global_attribute("global_seed_generator")
    if generator is not None:
        states["keras"] = repr(keras.ops.convert_to_numpy(generator.state.value).tolist())
    if BACKEND == "torch":
        import torch

        states["torch"] = torch.random.get_rng_state().numpy().tobytes().hex()
    return {name: hashlib.sha256(state.encode()).hexdigest() for name, state in states.items()}


def shuffled(url: str) -> dict:
    x, y = data(32 * 12)
    seen = {}
    for name, callbacks in [
        ("bare", []),
        ("monitored", [monitor(url, "shuffled")]),
        ("server_away", [monitor("http://127.0.0.1:9", "shuffled-away", flush_timeout=0.5)]),
    ]:
        keras.utils.set_random_seed(1)
        keras.random.uniform((1,))  # Keras's global seed generator exists and has drawn
        model = classifier()
        fitted = model.fit(Shuffled(x, y, 32), epochs=3, verbose=0, callbacks=[Slow(), *callbacks])
        seen[name] = {"history": history(fitted), "states": random_states()}
    return seen


# -- gan -------------------------------------------------------------------------------------


class GAN(keras.Model):
    """keras.io's GAN (custom train_step guides), small: the step trains the discriminator
    with `d_optimizer` and the generator with `g_optimizer`; `compile()` leaves
    `model.optimizer` its default, which the step never uses."""

    def __init__(self, latent_dim: int = 4) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.discriminator = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
        )
        self.generator = keras.Sequential([keras.Input((latent_dim,)), keras.layers.Dense(8)])
        self.seed_generator = keras.random.SeedGenerator(1337)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    def call(self, inputs):
        return self.discriminator(inputs)

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def _batch(self, real):
        if isinstance(real, (tuple, list)):
            real = real[0]
        size = keras.ops.shape(real)[0]
        noise = keras.random.normal((size, self.latent_dim), seed=self.seed_generator)
        labels = keras.ops.concatenate([keras.ops.ones((size, 1)), keras.ops.zeros((size, 1))], axis=0)
        return real, size, noise, labels

    def train_step(self, real):
        step = self._tf_step if BACKEND == "tensorflow" else self._torch_step
        d_loss, g_loss = step(*self._batch(real))
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}

    def _tf_step(self, real, size, noise, labels):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            combined = keras.ops.concatenate([self.generator(noise), real], axis=0)
            d_loss = self.loss_fn(labels, self.discriminator(combined))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply(grads, self.discriminator.trainable_weights)
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(keras.ops.zeros((size, 1)), self.discriminator(self.generator(noise)))
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply(grads, self.generator.trainable_weights)
        return d_loss, g_loss

    def _torch_step(self, real, size, noise, labels):
        import torch

        self.zero_grad()
        combined = keras.ops.concatenate([self.generator(noise), real], axis=0)
        d_loss = self.loss_fn(labels, self.discriminator(combined))
        d_loss.backward()
        with torch.no_grad():
            weights = self.discriminator.trainable_weights
            self.d_optimizer.apply([v.value.grad for v in weights], weights)
        self.zero_grad()
        g_loss = self.loss_fn(keras.ops.zeros((size, 1)), self.discriminator(self.generator(noise)))
        g_loss.backward()
        with torch.no_grad():
            weights = self.generator.trainable_weights
            self.g_optimizer.apply([v.value.grad for v in weights], weights)
        return d_loss, g_loss


GAN_PLAN = {
    2: [{"type": "set_lr", "args": {"value": 0.000777}}],
    4: [{"type": "set_lr", "args": {"factor": 0.5, "optimizer": "g_optimizer"}}],
    6: [{"type": "set_param", "args": {"name": "learning_rate", "value": 0.0001, "optimizer": 1}}],
    8: [{"type": "set_lr", "args": {"value": 0.1, "optimizer": "c_optimizer"}}],
}


def gan(url: str, run_id: str = "gan", epochs: int = 2, plan: dict | None = None) -> dict:
    keras.utils.set_random_seed(0)
    model = GAN()
    model.compile(d_optimizer=keras.optimizers.Adam(0.0003), g_optimizer=keras.optimizers.Adam(0.0003))
    callback = monitor(url, run_id)
    x, _ = data(32 * 5)
    steer = Commands(url, callback, GAN_PLAN if plan is None else plan, 5)
    model.fit(x, epochs=epochs, batch_size=32, verbose=0, callbacks=[steer, callback])
    rates = {
        name: float(keras.ops.convert_to_numpy(getattr(model, name).learning_rate))
        for name in ("optimizer", "d_optimizer", "g_optimizer")
    }
    return {"rates": rates}


# -- unknown_length -----------------------------------------------------------------------------


def unknown_length(url: str) -> dict:
    import tensorflow as tf

    x, y = data(32 * 9)  # 9 batches: with 4 a call, the third of each epoch runs one
    seen = {}
    for spe in sorted({1, SPE}):
        keras.utils.set_random_seed(0)
        pipeline = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda x, y: True).batch(32)
        assert pipeline.cardinality() == tf.data.UNKNOWN_CARDINALITY
        fitted = classifier(spe).fit(pipeline, epochs=3, verbose=0, callbacks=[monitor(url, f"unknown-{spe}")])
        seen[spe] = {"history": history(fitted)}
    return seen


# -- stop_after_several -------------------------------------------------------------------------


def stop_after_several(url: str) -> dict:
    keras.utils.set_random_seed(0)
    callback = monitor(url, "stop-after-several")
    plan = {
        4: [{"type": "set_lr", "args": {"value": 0.02, "optimizer": "optimizer"}}],
        8: [{"type": "stop_training"}],
    }
    x, y = data(32 * 16)
    fitted = classifier(SPE).fit(
        x, y, batch_size=32, epochs=3, verbose=0, shuffle=False, callbacks=[Commands(url, callback, plan, 16), callback]
    )
    return {"spe": SPE, "history": history(fitted)}


# -- epoch_logs ---------------------------------------------------------------------------------


class Extra(keras.callbacks.Callback):
    """A user's callback that adds its own value to the epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        logs["extra"] = float(epoch) / 4


def epoch_logs(url: str) -> dict:
    keras.utils.set_random_seed(0)
    x, y = data(32 * 4)
    callbacks = [
        monitor(url, "epoch-logs"),
        keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.02 / (epoch + 1)),
        Extra(),
    ]
    fitted = classifier().fit(x, y, batch_size=32, epochs=3, verbose=0, validation_split=0.25, callbacks=callbacks)
    return {"history": history(fitted)}


# -- full_disk ----------------------------------------------------------------------------------


class At(keras.callbacks.Callback):
    """Calls `actions[step](step)` before the given global steps, pausing a little each batch
    so that the client's threads act in between."""

    def __init__(self, actions: dict, steps: int) -> None:
        super().__init__()
        self.actions, self.steps, self.epoch = actions, steps, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        step = self.epoch * self.steps + batch
        if step in self.actions:
            self.actions[step](step)
        time.sleep(0.01)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:  # ENOSPC: the disk is full
            pass


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def full_disk(url: str) -> dict:
    """Its own server, in a process it kills: the server goes away with a command scheduled
    for step 20 held by the client, the spool takes records, then the spool's disk (the
    small tmpfs FITWATCH_SPOOL_DIR is on) fills up, and at step 40 the server comes back."""
    from client_callbacks import spool as spool_module
    from tests.support.servers import ServerProcess

    spool = Path(os.environ["FITWATCH_SPOOL_DIR"])
    server = ServerProcess(f"sqlite:///{spool.parent.parent / 'full-disk.db'}").start()
    keras.utils.set_random_seed(0)
    model = classifier()
    callback = RemoteCallback(url=server.url, run_id="full-disk", flush_interval=0.05, system_interval=None)

    def away(step):
        run = f"{server.url}/api/v1/runs/full-disk"
        _wait(lambda: httpx.get(run).status_code == 200, "the run to be created")
        issued = httpx.post(f"{run}/commands", json={"type": "set_lr", "args": {"value": 0.02}, "at": {"step": 20}})
        _wait(lambda: issued.json()["id"] in callback.client.commands.seen, "the command to reach the client")
        server.kill()

    def disk_full(step):
        _wait(lambda: any(p.stat().st_size > 200 for p in spool.glob("*.jsonl")), "records in the spool")
        _fill(spool.parent)

    def back(step):
        _wait(lambda: any("spool file" in str(w.message) for w in caught), "a write to the full disk")
        server.start()

    refused = []  # the spool writes the full disk refused: the client must not keep trying
    append = spool_module.SpoolFile.append

    def counted(self, ops):
        try:
            return append(self, ops)
        except OSError:
            refused.append(len(ops))
            raise

    spool_module.SpoolFile.append = counted
    x, y = data(32 * 10)
    raised = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.fit(
                x,
                y,
                batch_size=32,
                epochs=5,
                verbose=0,
                shuffle=False,
                callbacks=[At({2: away, 10: disk_full, 40: back}, 10), callback],
            )
        except Exception as exc:
            raised = repr(exc)
    run = f"{server.url}/api/v1/runs/full-disk"
    try:
        seen = {
            "raised": raised,
            "warnings": [str(w.message) for w in caught if w.category.__name__ == "FitwatchWarning"],
            "spool_file": None if callback.spool_file is None else str(callback.spool_file),
            "lr": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
            "steps": httpx.get(f"{run}/series/batch/loss", params={"max_points": 10_000}).json()["steps"],
            "commands": httpx.get(f"{run}/commands").json(),
            "status": httpx.get(run).json()["status"],
            "refused_writes": len(refused),
        }
    finally:
        server.stop()
    return seen


PROGRAMS = {
    "full_disk": full_disk,
    "shuffled": shuffled,
    "gan": gan,
    "gan_until_stopped": lambda url: gan(url, "gan-live", epochs=100_000, plan={}),
    "unknown_length": unknown_length,
    "stop_after_several": stop_after_several,
    "epoch_logs": epoch_logs,
}


def main() -> None:
    url, report, *names = sys.argv[1:]
    seen = {"backend": BACKEND}
    for name in names:
        seen[name] = PROGRAMS[name](url)
    with open(report, "w") as f:
        json.dump(seen, f)


if __name__ == "__main__":
    main()
