"""Weight histograms and statistics (client_callbacks/weights.py), held against NumPy: the
arithmetic on plain arrays in this process, and snapshots of real fits on each Keras backend,
each in its own process (a backend is chosen once per process)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from client_callbacks import weights
from client_callbacks.weights import Histogram, histogram, snapshot, statistics, summarize, update_ratio
from tests.support.training import program

pytestmark = pytest.mark.slow  # a training process on each backend

ROOT = Path(__file__).parents[2]
BACKENDS = ["tensorflow", "jax", "torch"]
STATS = ["mean", "std", "min", "max", "norm", "zero_fraction", "nonfinite"]


def numpy_statistics(values: np.ndarray) -> dict[str, float]:
    """The statistics as their definitions say, in NumPy, over the finite values."""
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    return {
        "mean": finite.mean(),
        "std": finite.std(),
        "min": finite.min(),
        "max": finite.max(),
        "norm": np.linalg.norm(finite),
        "zero_fraction": np.mean(finite == 0),
        "nonfinite": float(values.size - finite.size),
    }


def assert_binned_as_numpy(values: np.ndarray, hist: Histogram, bins: int = 30) -> None:
    """TensorBoard's buckets: `bins` of equal width from the finite minimum to the finite
    maximum, the counts numpy.histogram gives on those very edges, adding up to the finite
    values."""
    finite = np.asarray(values, dtype=np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    edges = np.array(hist.edges)
    assert len(hist.edges) == bins + 1 and len(hist.counts) == bins
    assert all(isinstance(e, float) for e in hist.edges) and all(isinstance(c, int) for c in hist.counts)
    assert (edges[0], edges[-1]) == (finite.min(), finite.max())
    np.testing.assert_allclose(np.diff(edges), (finite.max() - finite.min()) / bins, rtol=1e-9)
    assert hist.counts == np.histogram(finite, bins=edges)[0].tolist()
    assert sum(hist.counts) == finite.size


# -- the arithmetic, on plain arrays ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32"])
@pytest.mark.parametrize("bins", [30, 7, 1])
def test_histogram_has_tensorboards_buckets_and_numpys_counts(dtype, bins):
    values = (np.random.default_rng(1).normal(size=(64, 33)) * 10).astype(dtype)
    hist = histogram(values, bins)
    assert_binned_as_numpy(values, hist, bins)


def test_statistics_are_numpys():
    values = np.random.default_rng(2).normal(size=(50, 40)).astype("float32")
    values[values > 1.5] = 0.0  # some exact zeros
    stats = statistics(values)
    assert list(stats) == STATS
    assert all(type(v) is float for v in stats.values())
    assert stats == pytest.approx(numpy_statistics(values), rel=1e-12)
    assert 0 < stats["zero_fraction"] < 1


def test_nan_and_inf_are_counted_and_kept_out_of_bins_and_statistics():
    values = np.random.default_rng(3).normal(size=1000).astype("float32")
    values[[3, 500, 999]] = [np.nan, np.inf, -np.inf]
    stats = statistics(values)
    assert stats["nonfinite"] == 3
    assert stats == pytest.approx(numpy_statistics(values), rel=1e-12)
    assert all(math.isfinite(v) for v in stats.values())
    hist = histogram(values)
    assert_binned_as_numpy(values, hist)
    assert sum(hist.counts) == 997


def test_a_constant_array_is_one_bucket_as_in_tensorboard():
    values = np.full((4, 5), 0.25, dtype="float32")
    assert histogram(values) == ([-0.25, 0.75], [20])
    assert np.histogram(values, bins=[-0.25, 0.75])[0].tolist() == [20]
    assert statistics(values) == {
        "mean": 0.25,
        "std": 0.0,
        "min": 0.25,
        "max": 0.25,
        "norm": pytest.approx(math.sqrt(20 * 0.25**2)),
        "zero_fraction": 0.0,
        "nonfinite": 0.0,
    }
    zeros = np.zeros(7)
    assert histogram(zeros) == ([-0.5, 0.5], [7])
    assert statistics(zeros)["zero_fraction"] == 1.0


@pytest.mark.parametrize("values", [np.full(5, np.nan), np.array([np.inf, -np.inf]), np.zeros((0, 3))])
def test_no_finite_value_gives_no_bins_and_nan_statistics(values):
    assert histogram(values) == ([], [])
    stats = statistics(values)
    assert stats["nonfinite"] == values.size
    assert all(math.isnan(stats[name]) for name in STATS if name != "nonfinite")


def test_statistics_and_bins_of_a_weight_taken_in_chunks_equal_numpys_of_the_whole(monkeypatch):
    """Large weights go through in chunks (the variance combined chunk by chunk); with tiny
    chunks, a chunk all NaN, one with an Inf and ragged ends, the figures are still NumPy's."""
    monkeypatch.setattr(weights, "CHUNK", 1000)
    values = np.random.default_rng(4).normal(loc=3.0, size=10_007)
    values[2000:3000] = np.nan
    values[5555] = np.inf
    values[7000:7100] = 0.0
    stats = statistics(values)
    assert stats == pytest.approx(numpy_statistics(values), rel=1e-12)
    assert stats["nonfinite"] == 1001
    assert_binned_as_numpy(values, histogram(values))
    previous = values * 0.9
    with np.errstate(invalid="ignore"):
        expected = np.linalg.norm(values - previous) / np.linalg.norm(previous)  # NaN: NaN in both
    assert math.isnan(expected) and math.isnan(update_ratio(values, previous))
    clean = np.nan_to_num(values, nan=1.0, posinf=2.0)
    moved = clean + np.random.default_rng(5).normal(scale=0.01, size=clean.size)
    assert update_ratio(moved, clean) == pytest.approx(np.linalg.norm(moved - clean) / np.linalg.norm(clean), rel=1e-12)


def test_values_near_the_float64_limits_do_not_overflow_the_bins():
    values = np.array([-1.7e308, 1.7e308, 0.0, 1e307])
    hist = histogram(values, 4)
    assert hist.edges[0] == -1.7e308 and hist.edges[-1] == 1.7e308
    assert all(math.isfinite(e) for e in hist.edges)
    assert hist.counts == np.histogram(values, bins=np.array(hist.edges))[0].tolist() == [1, 0, 2, 1]


def test_update_ratio_is_the_relative_change_and_defined_where_previous_is_zero():
    previous = np.array([[3.0, 0.0], [0.0, 4.0]], dtype="float32")
    current = np.array([[3.0, 0.5], [0.0, 4.0]], dtype="float32")
    assert statistics(current, previous)["update_ratio"] == pytest.approx(0.5 / 5.0, rel=1e-12)
    assert statistics(previous, previous)["update_ratio"] == 0.0
    # From zero: 0.0 if nothing moved, else no ratio at all (not an Inf that looks like a blow-up).
    assert statistics(np.zeros(3), np.zeros(3))["update_ratio"] == 0.0
    assert "update_ratio" not in statistics(np.ones(3), np.zeros(3))
    assert update_ratio(np.ones(3), np.zeros(3)) is None
    # Another shape (a rebuilt weight): no ratio.
    assert "update_ratio" not in statistics(np.ones(3), np.ones(4))
    # A weight that blows up shows it.
    assert math.isinf(statistics(np.array([np.inf, 1.0]), np.ones(2))["update_ratio"])
    assert math.isnan(statistics(np.array([np.nan, 1.0]), np.ones(2))["update_ratio"])


def test_summarize_names_the_statistics_by_path_for_the_weights_scope():
    rng = np.random.default_rng(6)
    before = {"dense/kernel": rng.normal(size=(4, 3)).astype("float32"), "dense/bias": np.zeros(3, "float32")}
    after = {"dense/kernel": before["dense/kernel"] + 0.1, "dense/bias": np.array([0.1, 0.2, 0.3], "float32")}
    after["new/kernel"] = rng.normal(size=5).astype("float32")  # not in the previous snapshot
    summary = summarize(after, before)
    names = {f"{path}:{stat}" for path in after for stat in STATS} | {"dense/kernel:update_ratio"}
    assert set(summary.metrics) == names  # the zero bias moved: no ratio; the new weight: none
    assert summary.metrics["dense/kernel:update_ratio"] == pytest.approx(
        np.linalg.norm(after["dense/kernel"] - before["dense/kernel"], ord=None)
        / np.linalg.norm(before["dense/kernel"]),
        rel=1e-6,
    )
    assert summary.metrics["dense/kernel:norm"] == pytest.approx(np.linalg.norm(after["dense/kernel"]), rel=1e-6)
    assert list(summary.histograms) == list(after)
    for path, values in after.items():
        assert_binned_as_numpy(values, summary.histograms[path])
        assert {k: summary.metrics[f"{path}:{k}"] for k in STATS} == statistics(values)
    assert set(summarize(after).metrics) == names - {"dense/kernel:update_ratio"}
    assert summarize(after, bins=5).histograms["dense/kernel"] == histogram(after["dense/kernel"], 5)
    json.dumps({"metrics": summary.metrics, "histograms": summary.histograms})  # ready for the wire


@pytest.mark.parametrize("bins", [0, -1, 513, 2.5, True, "30"])
def test_bins_must_be_a_count_the_server_takes(bins):
    with pytest.raises(ValueError, match="bins"):
        histogram(np.ones(3), bins)


def test_importing_the_module_does_not_load_keras():
    code = "import sys, client_callbacks.weights; print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'jax', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- snapshots of real models ------------------------------------------------------------------


def test_a_snapshot_is_a_copy_of_every_weight_keyed_by_its_path():
    """In this process's backend: trainable and non-trainable weights, a shared layer's
    once, two weights a custom layer named alike both kept."""

    class Twice(keras.layers.Layer):
        def build(self, shape):
            self.a = self.add_weight(shape=(2,), name="w", initializer="ones")
            self.b = self.add_weight(shape=(3,), name="w", initializer="zeros")

        def call(self, x):
            return x

    keras.utils.set_random_seed(0)
    shared = keras.layers.Dense(2, name="shared")
    inputs = keras.Input((2,))
    outputs = keras.layers.BatchNormalization(name="norm")(shared(shared(Twice(name="twice")(inputs))))
    model = keras.Model(inputs, outputs)
    taken = snapshot(model)
    assert list(taken) == [
        "twice/w",
        "twice/w_1",
        "shared/kernel",
        "shared/bias",
        "norm/gamma",
        "norm/beta",
        "norm/moving_mean",
        "norm/moving_variance",
    ]
    for array, read in zip(taken.values(), model.get_weights(), strict=True):
        assert isinstance(array, np.ndarray) and array.dtype == read.dtype
        np.testing.assert_array_equal(array, read)
    model.layers[2].kernel.assign(np.full((2, 2), 7.0, "float32"))
    assert not (taken["shared/kernel"] == 7.0).any()  # a copy, not a view


# One process per backend: a model with trainable and non-trainable weights (BatchNormalization),
# snapshots before, in the middle of (after 5 of 10 steps) and after one epoch of fit, what
# `get_weights()` reads, the weights of the same model fitted only 5 steps and fitted 10 steps
# without the snapshots, and `summarize(after, before)` as the sender thread would make it.
TRAIN = """
    import json
    import sys

    import keras
    import numpy as np

    from client_callbacks.weights import snapshot, summarize
    from tests.support.training import data

    out = sys.argv[1]
    x, y = data()


    def model():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8,))
        hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
        hidden = keras.layers.BatchNormalization(name="norm")(hidden)
        outputs = keras.layers.Dense(3, name="head")(hidden)
        made = keras.Model(inputs, outputs)
        made.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return made


    def fit(made, samples=len(x), callbacks=()):
        made.fit(x[:samples], y[:samples], batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=list(callbacks))
        return made


    class Midway(keras.callbacks.Callback):
        # The model as a caller holds it: on JAX, Callback.model would put the state back itself.
        def on_train_batch_end(self, batch, logs=None):
            if batch == 4:
                self.taken = snapshot(trained)


    trained = model()
    before, read_before = snapshot(trained), trained.get_weights()
    midway = Midway()
    fit(trained, callbacks=[midway])
    after, read_after = snapshot(trained), trained.get_weights()
    arrays = {
        "five_steps": fit(model(), samples=160).get_weights(),
        "undisturbed": fit(model()).get_weights(),
        "read_before": read_before,
        "read_after": read_after,
        "before": list(before.values()),
        "midway": list(midway.taken.values()),
        "after": list(after.values()),
    }
    np.savez(out + ".npz", **{f"{name}.{i}": a for name, values in arrays.items() for i, a in enumerate(values)})
    summary = summarize(after, before)
    report = {
        "backend": keras.backend.backend(),
        "paths": [v.path for v in trained.weights],
        "keys": {"before": list(before), "midway": list(midway.taken), "after": list(after)},
        "metrics": summary.metrics,
        "histograms": summary.histograms,
    }
    with open(out + ".json", "w") as f:
        json.dump(report, f)
"""


@pytest.fixture(scope="module", params=BACKENDS)
def trained(request, tmp_path_factory) -> tuple[dict, dict[str, list[np.ndarray]]]:
    folder = tmp_path_factory.mktemp(request.param)
    script = program(folder, TRAIN)
    env = {**os.environ, "KERAS_BACKEND": request.param, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, str(script), str(folder / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((folder / "out.json").read_text())
    assert report["backend"] == request.param
    with np.load(folder / "out.npz") as npz:
        arrays: dict[str, list[np.ndarray]] = {}
        for key in sorted(npz.files, key=lambda k: (k.split(".")[0], int(k.split(".")[1]))):
            arrays.setdefault(key.split(".")[0], []).append(npz[key])
    return report, arrays


PATHS = [
    "hidden/kernel",
    "hidden/bias",
    "norm/gamma",
    "norm/beta",
    "norm/moving_mean",
    "norm/moving_variance",
    "head/kernel",
    "head/bias",
]


def test_snapshots_are_the_weights_get_weights_reads(trained):
    report, arrays = trained
    assert report["paths"] == PATHS
    assert report["keys"] == {"before": PATHS, "midway": PATHS, "after": PATHS}
    for taken, read in [("before", "read_before"), ("after", "read_after")]:
        for a, b in zip(arrays[taken], arrays[read], strict=True):
            assert a.dtype == b.dtype == np.float32
            np.testing.assert_array_equal(a, b)


def test_a_snapshot_in_the_middle_of_an_epoch_holds_the_live_weights_and_stays_put(trained):
    """After 5 of 10 steps (on JAX, where the variables hold their initializers until the state
    is synced) the snapshot equals the weights of the same model fitted 5 steps, and the rest of
    the epoch did not change it; taking it did not change the training."""
    _, arrays = trained
    for midway, five in zip(arrays["midway"], arrays["five_steps"], strict=True):
        np.testing.assert_allclose(midway, five, rtol=1e-5, atol=1e-6)
    assert not np.allclose(arrays["midway"][0], arrays["before"][0])
    assert not np.allclose(arrays["midway"][0], arrays["after"][0])
    for after, undisturbed in zip(arrays["read_after"], arrays["undisturbed"], strict=True):
        np.testing.assert_allclose(after, undisturbed, rtol=1e-5, atol=1e-6)


def test_statistics_and_histograms_of_a_fit_are_numpys_of_get_weights(trained):
    report, arrays = trained
    metrics = report["metrics"]
    for path, after in zip(PATHS, arrays["read_after"], strict=True):
        expected = numpy_statistics(after)
        assert {stat: metrics[f"{path}:{stat}"] for stat in STATS} == pytest.approx(expected, rel=1e-9, abs=1e-12), path
        edges, counts = report["histograms"][path]
        if after.min() == after.max():
            assert (edges, counts) == ([after.min() - 0.5, after.max() + 0.5], [after.size])
        else:
            assert_binned_as_numpy(after, Histogram(edges, counts))
        assert sum(counts) == after.size


def test_update_ratio_after_one_epoch_is_the_formula_on_the_arrays_before_and_after(trained):
    """`‖after - before‖ / ‖before‖` for every weight that was not zero before; the biases,
    beta and moving mean start at zeros and moved: no ratio for them."""
    report, arrays = trained
    metrics = report["metrics"]
    with_ratio = []
    for path, before, after in zip(PATHS, arrays["read_before"], arrays["read_after"], strict=True):
        before64, after64 = before.astype(np.float64), after.astype(np.float64)
        if np.linalg.norm(before64) == 0:
            assert f"{path}:update_ratio" not in metrics
            continue
        with_ratio.append(path)
        expected = np.linalg.norm(after64 - before64) / np.linalg.norm(before64)
        assert metrics[f"{path}:update_ratio"] == pytest.approx(expected, rel=1e-9), path
        assert metrics[f"{path}:update_ratio"] > 0
    assert with_ratio == ["hidden/kernel", "norm/gamma", "norm/moving_variance", "head/kernel"]
