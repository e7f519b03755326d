"""Training overhead of RemoteCallback, against DESIGN.md's targets and its peers.

Fits a small MLP (64 features, Dense 64 -> 10, batch 32, 1,000 steps an epoch) with each
logger, each fit right after a bare fit with no callback, in a new random order every
round, and prints the median of the (logger / bare) ratios, so that the machine's drift
(±10% run to run) and what one logger leaves behind for the next (TensorBoard's writer
threads) cancel out:

- RemoteCallback logging every batch (and, for comparison, the same with `async_safe`
  off, which makes Keras call the batch hooks on the training thread; with a knob and an
  action registered for steering; and with system samples every 0.5 s, twenty times the
  default rate);
- the stock keras.callbacks.RemoteMonitor (it posts once an epoch);
- a naive callback doing a synchronous POST every batch;
- TensorBoard(update_freq="batch") (needs `pip install tensorboard` in the bench env).

Then it times the hooks themselves: the median time inside RemoteCallback's
`on_train_batch_begin` (training thread) and `on_train_batch_end` (Keras's worker thread
when async-safe). The server is `fitwatch serve` on a fresh SQLite file, in its own process.

    python bench/overhead.py [--rounds 9] [--steps 1000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx
import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ingest import fitwatch_server

from client_callbacks import RemoteCallback
from client_callbacks.system import Gpus, SystemSampler

TARGET_RATIO = 0.97
TARGET_HOOK_US = 50.0


class NaivePost(keras.callbacks.Callback):
    """What a first attempt looks like: one synchronous POST per batch."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.http = httpx.Client(base_url=url, timeout=10)
        self.run = self.http.post("/api/v1/runs", json={"name": "naive"}).json()["id"]
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        record = {"seq": self.step, "scope": "batch", "step": self.step, "wall_time": time.time(), "metrics": logs}
        self.http.post(f"/api/v1/runs/{self.run}/logs", json={"records": [record]})
        self.step += 1


class Blocking(RemoteCallback):
    async_safe = False


class Timed(RemoteCallback):
    """RemoteCallback with its batch hooks timed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.begin_ns: list[int] = []
        self.end_ns: list[int] = []
        self.edges_ns: dict[str, int] = {}

    def on_train_begin(self, logs=None):
        start = time.perf_counter_ns()
        super().on_train_begin(logs)
        self.edges_ns["on_train_begin"] = time.perf_counter_ns() - start

    def on_train_end(self, logs=None):
        start = time.perf_counter_ns()
        super().on_train_end(logs)
        self.edges_ns["on_train_end"] = time.perf_counter_ns() - start

    def on_train_batch_begin(self, batch, logs=None):
        start = time.perf_counter_ns()
        super().on_train_batch_begin(batch, logs)
        self.begin_ns.append(time.perf_counter_ns() - start)

    def on_train_batch_end(self, batch, logs=None):
        start = time.perf_counter_ns()
        super().on_train_batch_end(batch, logs)
        self.end_ns.append(time.perf_counter_ns() - start)


def model() -> keras.Model:
    m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return m


class Clock(keras.callbacks.Callback):
    """Times the steps alone: from the first batch to the end, before any callback's
    on_train_end (it comes first in the list)."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.first = time.perf_counter()

    def on_train_end(self, logs=None):
        self.last = time.perf_counter()


def steps_per_s(m: keras.Model, x, y, callbacks: list) -> tuple[float, float]:
    """(steps/s of the whole fit call, steps/s of the steps alone)."""
    clock = Clock()
    start = time.perf_counter()
    m.fit(x, y, batch_size=32, epochs=1, callbacks=[clock, *callbacks], verbose=0, shuffle=False)
    steps = len(x) // 32
    return steps / (time.perf_counter() - start), steps / (clock.last - clock.first)


def system_sample_us(n: int = 2000) -> float:
    """The median cost of one sample of the process and machine (psutil; NVML when there)."""
    sampler = SystemSampler(lambda sample: None, 10.0)
    sampler.gpus = Gpus()
    sampler.process.cpu_percent(None)
    times = []
    for _ in range(n):
        start = time.perf_counter_ns()
        sampler.sample()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32 * args.steps, 64)).astype("float32")
    y = rng.integers(0, 10, len(x))
    workdir = Path(tempfile.mkdtemp(prefix="fitwatch-overhead-"))
    spool = workdir / "spool"

    with fitwatch_server(f"sqlite:///{workdir / 'fitwatch.db'}") as (url, _, _):
        variants = {
            "RemoteCallback": lambda: [RemoteCallback(url=url, spool_dir=spool, run_name="bench")],
            "RemoteCallback, system sampled every 0.5 s": lambda: [
                RemoteCallback(url=url, spool_dir=spool, run_name="bench-system", system_interval=0.5)
            ],
            "RemoteCallback, async_safe off": lambda: [Blocking(url=url, spool_dir=spool, run_name="bench")],
            "RemoteCallback, a knob and an action": lambda: [
                RemoteCallback(
                    url=url,
                    spool_dir=spool,
                    run_name="bench-steer",
                    knobs={"weight": keras.Variable(1.0, trainable=False)},
                    actions={"noop": lambda model, step: None},
                )
            ],
            "RemoteMonitor (stock, per epoch)": lambda: [
                keras.callbacks.RemoteMonitor(root=url, path="/publish/epoch/end/?run=bench-rm", send_as_json=True)
            ],
            "naive sync POST per batch": lambda: [NaivePost(url)],
        }
        try:
            import tensorboard  # noqa: F401

            variants["TensorBoard(update_freq='batch')"] = lambda: [
                keras.callbacks.TensorBoard(log_dir=str(workdir / "tb"), update_freq="batch")
            ]
        except ImportError:
            print("TensorBoard skipped: pip install tensorboard to compare with it")

        m = model()
        for make in variants.values():  # warm up every path once
            steps_per_s(m, x[: 32 * 50], y[: 32 * 50], make())
        bare: list[tuple[float, float]] = []
        # Per variant, (bare fit, fit with the logger) for each round.
        pairs: dict[str, list[tuple[tuple[float, float], tuple[float, float]]]] = {name: [] for name in variants}
        shuffle = random.Random(0).shuffle
        for _ in range(args.rounds):
            order = list(variants)
            shuffle(order)
            for name in order:
                bare.append(steps_per_s(m, x, y, []))
                pairs[name].append((bare[-1], steps_per_s(m, x, y, variants[name]())))

        timed = Timed(url=url, spool_dir=spool, run_name="bench-timed")
        steps_per_s(m, x, y, [timed])
        stored_runs = httpx.get(f"{url}/api/v1/runs", params={"limit": 1000}).json()

    print(f"MLP 64 -> Dense 64 -> 10, batch 32, {args.steps} steps an epoch, {args.rounds} rounds")
    print("ratio: to the bare fit just before, median (min-max) over the rounds; 'steps' times the")
    print("steps alone, 'fit' the whole fit call (with the logger's start and final flush)")
    print(f"{'variant':36s} {'steps/s':>8s} {'ratio, steps':>22s} {'ratio, fit':>22s}")
    print(f"{'none (bare fit)':36s} {statistics.median(b[1] for b in bare):8,.0f}")
    ratios = {}
    for name, runs in pairs.items():
        steady = [v[1] / b[1] for b, v in runs]
        whole = [v[0] / b[0] for b, v in runs]
        ratios[name] = (statistics.median(steady), statistics.median(whole))
        print(
            f"{name:36s} {statistics.median(v[1] for _, v in runs):8,.0f} "
            f"{ratios[name][0]:8.3f} ({min(steady):.3f}-{max(steady):.3f}) "
            f"{ratios[name][1]:8.3f} ({min(whole):.3f}-{max(whole):.3f})"
        )
    begin_us = statistics.median(timed.begin_ns) / 1000
    end_us = statistics.median(timed.end_ns) / 1000
    print(
        f"\nRemoteCallback hooks, median: on_train_batch_begin {begin_us:.1f} us (training thread), "
        f"on_train_batch_end {end_us:.1f} us (Keras's worker thread)"
    )
    stored = sum(1 for r in stored_runs if r["name"].startswith("bench"))
    edges = ", ".join(f"{name} {ns / 1e6:.1f} ms" for name, ns in timed.edges_ns.items())
    print(f"once a fit: {edges} (the final flush waits for the server's answer)")
    print(f"runs stored by RemoteCallback variants: {stored}")
    sample_us = system_sample_us()
    print(
        f"one system sample: {sample_us:.0f} us of its own thread's CPU time, "
        f"{sample_us / 1e4:.4f} % of a core at the default 10 s interval"
    )
    print()
    for name in (
        "RemoteCallback",
        "RemoteCallback, a knob and an action",
        "RemoteCallback, system sampled every 0.5 s",
    ):
        steady, whole = ratios[name]
        print(
            f"target ({name}): ratio >= {TARGET_RATIO}: steps {steady:.3f} "
            f"({'met' if steady >= TARGET_RATIO else 'NOT met'}), "
            f"whole {args.steps}-step fit {whole:.3f} ({'met' if whole >= TARGET_RATIO else 'NOT met'})"
        )
    worst = max(begin_us, end_us)
    print(
        f"target: <= {TARGET_HOOK_US:.0f} us a batch in the hooks: {worst:.1f} us "
        f"({'met' if worst <= TARGET_HOOK_US else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
