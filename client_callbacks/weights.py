"""What a model's weights look like: histograms and statistics, as TensorBoard's
`histogram_freq` shows them, on every Keras 3 backend.

Two halves, for two threads. `snapshot(model)` runs on the training thread and only copies:
every weight as a NumPy array, keyed by its Keras 3 `Variable.path` (`dense_1/kernel`).
`summarize(current, previous)` runs on the sender thread and does the arithmetic: for each
weight a histogram (`histogram`: TensorBoard's 30 equal-width bins over the weight's own finite
range) and its statistics (`statistics`: mean, std, min, max, L2 norm, zero fraction, the count
of non-finite values, and the update ratio against the previous snapshot), the statistics named
`<path>:<stat>` for the `weights` scope.

The arithmetic is float64 and goes through each weight in chunks of `CHUNK` elements, so a weight
of 100M parameters costs a few MB of scratch memory, not three float64 copies of itself. The
module needs only NumPy: `snapshot` imports Keras when it is called, never at import time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

BINS = 30  # TensorBoard's DEFAULT_BUCKET_COUNT
MAX_BINS = 512  # the server refuses a histogram of more
CHUNK = 1 << 18  # elements of one weight handled at once: 2 MiB of float64 scratch
STATS = ("mean", "std", "min", "max", "norm", "zero_fraction", "nonfinite")


class Histogram(NamedTuple):
    """`edges` (bins + 1 floats, increasing) and `counts` (bins ints). Bin i holds the values v
    with edges[i] <= v < edges[i+1], the last bin its right edge too (as `numpy.histogram`)."""

    edges: list[float]
    counts: list[int]


@dataclass(frozen=True)
class Summary:
    """What `summarize` makes of one snapshot.

    `metrics`: `"<path>:<stat>"` -> value, ready to be logged in scope `weights`
    (`dense_1/kernel:norm`, `dense_1/kernel:update_ratio`). `histograms`: path -> Histogram.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)


def snapshot(model: Any) -> dict[str, np.ndarray]:
    """A copy of every weight of `model` (`model.weights`: trainable and not, as TensorBoard's
    histograms), keyed by its `Variable.path`, as NumPy arrays that nothing will change.

    Only copies (`keras.ops.convert_to_numpy(variable.value)`, which is a copy on TensorFlow,
    JAX and PyTorch; the rare result that could still share memory is copied again), so that the
    training thread pays as little as possible; `summarize` does the rest on another thread.

    On JAX a fit keeps the live values outside the variables during an epoch (the variables are
    emptied: reading one raises, or gives its initializer): the live state has to be put back
    with `model.jax_state_sync()` first, as client_callbacks/steering.py does before applying
    commands (and as `keras.callbacks.Callback.model` does, which a caller holding the model
    itself bypasses). This function does that itself (a no-op when the state is in sync, and on
    the other backends), so a caller need not; calling it before is harmless.

    A variable shared by several layers appears once. Two different variables with the same path
    (a custom layer that names two weights alike) keep both: the second gets `_1`, and so on.
    """
    import keras

    from .handlers import sync_state

    sync_state(model)
    arrays: dict[str, np.ndarray] = {}
    seen: set[int] = set()
    for variable in model.weights:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        array = keras.ops.convert_to_numpy(variable.value)
        if not (array.flags.owndata and array.flags.writeable):
            array = array.copy()  # a view of the backend's buffer, which the next step may overwrite
        arrays[_unique(arrays, variable.path)] = array
    return arrays


def histogram(values: np.ndarray, bins: int = BINS) -> Histogram:
    """TensorBoard's histogram (tensorboard/plugins/histogram/summary_v2.py, `_buckets`):
    `bins` equal-width bins from the smallest to the largest finite value; a single bin
    `[v - 0.5, v + 0.5]` when every finite value is the same v; no bin at all (`([], [])`) when
    there is no finite value. NaN and ±Inf are left out of the bins (`statistics` counts them),
    so the counts add up to the number of finite values.

    Returns `(edges, counts)`: bins + 1 edges (the first the minimum, the last the maximum,
    exactly) and bins counts, binned as `numpy.histogram` bins on those edges.
    """
    return _scan(values, _check_bins(bins)).histogram()


def statistics(values: np.ndarray, previous: np.ndarray | None = None) -> dict[str, float]:
    """The statistics of one weight, float64, over its finite values:

    - `mean`, `std` (the population standard deviation, NumPy's `std` with ddof=0), `min`, `max`,
      `norm` (L2: the square root of the sum of squares) and `zero_fraction` (the share of the
      finite values that are 0, -0.0 included), all of the finite values only;
    - `nonfinite`: how many values are NaN, +Inf or -Inf. They are left out of every other
      statistic, so one NaN does not hide the shape of the rest; where no value is finite (or the
      array is empty) every other statistic is NaN;
    - `update_ratio`, only when `previous` (the same weight at the previous snapshot) is given
      with the same shape: `‖values - previous‖ / ‖previous‖` (L2, over all elements, float64),
      the relative change between the two samples. A NaN or Inf in either array makes it NaN or
      Inf: a weight that blew up shows. Where `‖previous‖` is 0 (a bias that starts at zeros, on
      its first interval) the ratio is 0.0 if nothing moved and is otherwise left out: a change
      from nothing has no finite relative size, and an Inf there would look like a blow-up.
    """
    stats = _scan(values, None).statistics()
    if previous is not None:
        ratio = update_ratio(values, previous)
        if ratio is not None:
            stats["update_ratio"] = ratio
    return stats


def update_ratio(values: np.ndarray, previous: np.ndarray) -> float | None:
    """`‖values - previous‖ / ‖previous‖` as `statistics` defines it; None where it is not
    defined (another shape, or a zero `previous` that moved)."""
    values, previous = np.asarray(values), np.asarray(previous)
    if values.shape != previous.shape:
        return None
    now, before = values.reshape(-1), previous.reshape(-1)
    moved = norm = 0.0
    with np.errstate(all="ignore"):
        for start in range(0, now.size, CHUNK):
            b = before[start : start + CHUNK].astype(np.float64)
            d = now[start : start + CHUNK].astype(np.float64)
            d -= b
            moved += float(np.dot(d, d))
            norm += float(np.dot(b, b))
        if norm == 0.0:
            return 0.0 if moved == 0.0 else None
        return math.sqrt(moved) / math.sqrt(norm)


def summarize(
    current: dict[str, np.ndarray], previous: dict[str, np.ndarray] | None = None, bins: int = BINS
) -> Summary:
    """Histograms and statistics of every weight of a snapshot: the statistics as metrics
    `"<path>:<stat>"` (with `<path>:update_ratio` for the weights that `previous`, an earlier
    snapshot, holds with the same shape), and the histograms keyed by path."""
    bins = _check_bins(bins)
    summary = Summary()
    for path, values in current.items():
        scan = _scan(values, bins)
        stats = scan.statistics()
        if previous is not None and path in previous:
            ratio = update_ratio(values, previous[path])
            if ratio is not None:
                stats["update_ratio"] = ratio
        summary.metrics.update({f"{path}:{name}": value for name, value in stats.items()})
        summary.histograms[path] = scan.histogram()
    return summary


class _Scan(NamedTuple):
    size: int  # all values
    count: int  # the finite ones
    mean: float
    m2: float  # sum of squared deviations from the mean
    sumsq: float
    zeros: int
    low: float
    high: float
    edges: np.ndarray | None
    counts: np.ndarray | None

    def statistics(self) -> dict[str, float]:
        nonfinite = float(self.size - self.count)
        if not self.count:
            return {**dict.fromkeys(STATS[:-1], math.nan), "nonfinite": nonfinite}
        return {
            "mean": self.mean,
            "std": math.sqrt(max(self.m2, 0.0) / self.count),
            "min": self.low,
            "max": self.high,
            "norm": math.sqrt(self.sumsq),
            "zero_fraction": self.zeros / self.count,
            "nonfinite": nonfinite,
        }

    def histogram(self) -> Histogram:
        if not self.count:
            return Histogram([], [])
        if self.low == self.high:
            return Histogram([self.low - 0.5, self.high + 0.5], [self.count])
        return Histogram(self.edges.tolist(), self.counts.tolist())


def _scan(values: np.ndarray, bins: int | None) -> _Scan:
    """One weight in one pass of float64 chunks (after a cheap look at its extremes): count,
    mean and squared deviations (combined chunk by chunk with Chan et al.'s update, as exact as
    a two-pass variance), sum of squares, zeros, and with `bins` the histogram's counts."""
    flat = np.asarray(values).reshape(-1)
    count, low, high = _extremes(flat)
    every_value_finite = count == flat.size
    mean = m2 = sumsq = 0.0
    seen = zeros = 0
    edges = counts = None
    binned = bins is not None and count > 0 and low < high
    if binned:
        # Past ±8.9e307 the width of the range overflows: bin the halves, exactly (a power of two).
        scale = 1.0 if math.isfinite(high - low) else 0.5
        span = (low * scale, high * scale)
        counts = np.zeros(bins, dtype=np.int64)
    with np.errstate(all="ignore"):
        for start in range(0, flat.size if count else 0, CHUNK):
            chunk = flat[start : start + CHUNK].astype(np.float64)
            if not every_value_finite:
                chunk = chunk[np.isfinite(chunk)]
            k = chunk.size
            if not k:
                continue
            chunk_mean = float(chunk.sum()) / k
            sumsq += float(np.dot(chunk, chunk))
            zeros += k - int(np.count_nonzero(chunk))
            deviation = chunk - chunk_mean
            delta = chunk_mean - mean
            total = seen + k
            mean += delta * k / total
            m2 += float(np.dot(deviation, deviation)) + delta * delta * seen * k / total
            seen = total
            if binned:
                if scale != 1.0:
                    chunk *= scale
                chunk_counts, edges = np.histogram(chunk, bins=bins, range=span)
                counts += chunk_counts
    if binned:
        edges = edges / scale
        edges[0], edges[-1] = low, high
    return _Scan(flat.size, count, mean, m2, sumsq, zeros, low, high, edges, counts)


def _extremes(flat: np.ndarray) -> tuple[int, float, float]:
    """How many values are finite, and the smallest and largest of them: the plain min and max
    where they are finite (then every value is: a NaN or Inf would be one of them), else a pass
    over the finite values."""
    if not flat.size:
        return 0, math.inf, -math.inf
    with np.errstate(all="ignore"):
        low, high = float(flat.min()), float(flat.max())
        if math.isfinite(low) and math.isfinite(high):
            return flat.size, low, high
        count, low, high = 0, math.inf, -math.inf
        for start in range(0, flat.size, CHUNK):
            chunk = flat[start : start + CHUNK]
            chunk = chunk[np.isfinite(chunk)]
            if chunk.size:
                count += chunk.size
                low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    return count, low, high


def _check_bins(bins: int) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be an integer from 1 to {MAX_BINS}, got {bins!r}")
    return int(bins)


def _unique(taken: dict[str, Any], path: str) -> str:
    if path not in taken:
        return path
    n = 1
    while f"{path}_{n}" in taken:
        n += 1
    return f"{path}_{n}"
