"""Series reads: full resolution when the range fits, otherwise min/max buckets that keep
the first and last point, every spike and every non-finite point."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.api import assert_error, create_run, post_logs


def as_json(v: float) -> float | str:
    if np.isfinite(v):
        return v
    return "NaN" if np.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def upload(api, run_id: str, values: np.ndarray, name: str = "loss", steps=None, start_seq: int = 0) -> None:
    steps = np.arange(len(values)) if steps is None else steps
    for i in range(0, len(values), 10_000):
        records = [
            {
                "seq": start_seq + j,
                "scope": "batch",
                "step": int(steps[j]),
                "wall_time": 1000.0 + j,
                "metrics": {name: as_json(float(values[j]))},
            }
            for j in range(i, min(i + 10_000, len(values)))
        ]
        assert post_logs(api, run_id, records).json()["accepted"] == len(records)


def read(api, run_id="r", name="loss", **params):
    response = api.get(f"/api/v1/runs/{run_id}/series/batch/{name}", params=params)
    assert response.status_code == 200, response.text
    data = response.json()
    data["values"] = [float(v) if isinstance(v, str) else v for v in data["values"]]
    return data


def envelope_ok(data, steps: np.ndarray, values: np.ndarray, lo: int, hi: int) -> None:
    """Every kept point is a real point; the global and per-region extremes survive."""
    real = dict(zip(steps.tolist(), values.tolist()))
    for step, value in zip(data["steps"], data["values"]):
        assert step in real and ((np.isnan(value) and np.isnan(real[step])) or value == real[step])
    inside = (steps >= lo) & (steps <= hi)
    finite = inside & np.isfinite(values)
    got = np.array(data["values"], float)
    assert np.nanmax(got[np.isfinite(got)]) == values[finite].max()
    assert np.nanmin(got[np.isfinite(got)]) == values[finite].min()
    assert data["steps"][0] == steps[inside][0] and data["steps"][-1] == steps[inside][-1]
    assert set(steps[inside & ~np.isfinite(values)].tolist()) <= set(data["steps"])
    assert data["steps"] == sorted(data["steps"])


def test_small_series_comes_back_whole(api):
    create_run(api, "r")
    values = np.linspace(1, 0, 500)
    upload(api, "r", values)
    data = read(api, max_points=500)
    assert data["downsampled"] is False and data["count"] == 500 and data["values"] == values.tolist()


@pytest.mark.parametrize("n", [2500, 30_000, 120_000])
def test_downsampling_keeps_first_last_spikes_and_nonfinite(api, n):
    rng = np.random.default_rng(n)
    values = rng.normal(size=n)
    spikes = rng.choice(n, 5, replace=False)
    values[spikes[0]] = 1e6
    values[spikes[1]] = -1e6
    values[spikes[2]] = np.nan
    values[spikes[3]] = np.inf
    values[spikes[4]] = -np.inf
    create_run(api, "r")
    upload(api, "r", values)
    # A second series with its own NaN must not leak into this one.
    upload(api, "r", np.full(100, np.nan), name="other", start_seq=10_000_000)
    data = read(api, max_points=2000)
    assert data["downsampled"] is True and data["count"] == n
    assert len(data["steps"]) <= 2000 + 3
    assert len(data["steps"]) >= 500, "downsampling should use most of the budget"
    envelope_ok(data, np.arange(n), values, 0, n - 1)
    assert {1e6, -1e6} <= set(data["values"])


def test_every_bucket_keeps_its_extremes(api):
    """Against a brute-force reference: each bucket's min and max is in the answer."""
    n, max_points = 50_000, 400
    rng = np.random.default_rng(7)
    values = np.cumsum(rng.normal(size=n))
    create_run(api, "r")
    upload(api, "r", values)
    data = read(api, max_points=max_points)
    kept_steps = np.array(data["steps"])
    kept_values = np.array(data["values"])
    # Each window's extreme is drawn: a kept point no farther than three bucket widths
    # reaches at least as far (blocks are aligned to powers of four, so the point that
    # stands for a window may sit just beside it).
    width = n // (max_points // 2)
    for lo in range(0, n, width):
        window = values[lo : lo + width]
        for i, sign in ((lo + int(window.argmin()), -1), (lo + int(window.argmax()), 1)):
            near = np.abs(kept_steps - i) <= 3 * width
            assert (sign * kept_values[near] >= sign * values[i]).any(), (i, values[i])


def test_zoomed_range_is_full_resolution_when_it_fits(api):
    n = 40_000
    values = np.sin(np.arange(n) / 100.0)
    create_run(api, "r")
    upload(api, "r", values)
    data = read(api, max_points=2000, since_step=12_345, until_step=13_344)
    assert data["downsampled"] is False and data["count"] == 1000
    assert data["steps"] == list(range(12_345, 13_345))
    assert data["values"] == values[12_345:13_345].tolist()


def test_zoomed_range_too_big_is_downsampled_within_the_range(api):
    n = 120_000
    rng = np.random.default_rng(3)
    values = rng.normal(size=n)
    lo, hi = 10_001, 99_998
    values[lo] = 50.0  # a spike on the very edge of the range, in a partial block
    values[hi - 1] = -50.0
    values[lo - 1] = 99.0  # just outside: must not appear
    create_run(api, "r")
    upload(api, "r", values)
    data = read(api, max_points=1000, since_step=lo, until_step=hi)
    assert data["downsampled"] is True and data["count"] == hi - lo + 1
    assert min(data["steps"]) >= lo and max(data["steps"]) <= hi
    envelope_ok(data, np.arange(n), values, lo, hi)
    assert 50.0 in data["values"] and -50.0 in data["values"] and 99.0 not in data["values"]


def test_sparse_steps_are_handled(api):
    steps = np.arange(0, 3_000_000, 100)  # batch_frequency=100
    values = np.cos(steps / 1e5)
    create_run(api, "r")
    upload(api, "r", values, steps=steps)
    data = read(api, max_points=1000)
    assert data["count"] == len(steps) and data["downsampled"]
    envelope_ok(data, steps, values, 0, int(steps[-1]))


def name(v: float) -> str:
    return "NaN" if np.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def test_few_nonfinite_points_are_all_kept(api):
    values = np.sin(np.arange(20_000) / 50.0)
    odd = [3, 4, 5, 700, 701, 19_999]
    values[odd] = [np.nan, np.inf, -np.inf, np.nan, np.nan, np.inf]
    create_run(api, "r")
    upload(api, "r", values)
    data = read(api, max_points=500)
    assert data["downsampled"]
    kept = {s: name(v) for s, v in zip(data["steps"], data["values"]) if not np.isfinite(v)}
    assert kept == {3: "NaN", 4: "Infinity", 5: "-Infinity", 700: "NaN", 701: "NaN", 19_999: "Infinity"}


def test_many_nonfinite_points_keep_the_first_of_each_kind_in_each_bucket(api):
    """More NaN/Infinity points than buckets: each bucket that holds a kind shows its first."""
    n, max_points = 30_000, 500
    rng = np.random.default_rng(11)
    values = rng.normal(size=n)
    kinds = rng.choice([np.nan, np.inf, -np.inf, 0.0], size=n, p=[0.2, 0.05, 0.05, 0.7])
    values = np.where(kinds == 0.0, values, kinds)
    create_run(api, "r")
    upload(api, "r", values)
    data = read(api, max_points=max_points)
    got = [(s, name(v)) for s, v in zip(data["steps"], data["values"]) if not np.isfinite(v)]
    buckets = (max_points - 2) // 2
    width = -(-n // buckets)
    expected = {}
    for step in np.flatnonzero(~np.isfinite(values)).tolist():
        expected.setdefault((step // width, name(values[step])), step)
    assert sorted(got) == sorted((step, kind) for (_, kind), step in expected.items())
    assert len(data["steps"]) <= 2 + 2 * buckets + 3 * buckets


class CountingConnection:
    """A real connection that counts the rows each query brings back to the server."""

    def __init__(self, conn) -> None:
        self.conn, self.rows = conn, 0

    def execute(self, *args, **kwargs):
        frozen = self.conn.execute(*args, **kwargs).freeze()
        self.rows += len(frozen.data)
        return frozen()

    def __getattr__(self, name):
        return getattr(self.conn, name)


def rows_read(server, run_id: str, max_points: int) -> tuple[int, object]:
    from monitor_server.infra.db import reading
    from monitor_server.store.series import read_series

    with reading(server.app.state.engine) as conn:
        counting = CountingConnection(conn)
        _, count, downsampled, pts = read_series(counting, run_id, "batch", "loss", max_points, None, None)
    return counting.rows, (count, downsampled, pts)


@pytest.mark.parametrize("steps", [200, 20_000])
def test_points_that_share_steps_are_read_a_step_at_a_time(api, server, steps):
    """Many points on few steps (evaluations, several writers): the server reads one row
    a step, not every point."""
    shared, crowd = np.arange(steps), 50_000
    step_of = np.concatenate([shared, np.full(crowd, steps - 1)])
    values = np.concatenate([np.cos(shared / 30.0), np.linspace(-5, 5, crowd)])
    create_run(api, "r")
    upload(api, "r", values, steps=step_of)
    rows, (count, downsampled, pts) = rows_read(server, "r", max_points=100)
    assert count == steps + crowd and downsampled
    assert rows <= 101 + 2 * steps + 1_000  # the head read, a row a step, summary blocks
    assert {-5.0, 5.0} <= set(pts.values.tolist())  # the crowded step's extremes are drawn


def test_reading_a_long_run_of_nan_is_bounded(api, server):
    values = np.full(60_000, np.nan)
    create_run(api, "r")
    upload(api, "r", values)
    rows, (count, downsampled, pts) = rows_read(server, "r", max_points=200)
    assert count == 60_000 and downsampled
    assert rows <= 201 + 1 + 3 * 99 + 99 + 1_000 and len(pts) <= 2 + 3 * 99


def test_series_list_and_errors(api):
    create_run(api, "r")
    upload(api, "r", np.array([3.0, 1.0, 2.0]))
    assert api.get("/api/v1/runs/r/series").json() == [
        {
            "scope": "batch",
            "name": "loss",
            "count": 3,
            "first_step": 0,
            "last_step": 2,
            "last_value": 2.0,
            "min": 1.0,
            "max": 3.0,
        }
    ]
    assert_error(api.get("/api/v1/runs/r/series/batch/nope"), 404)
    assert_error(api.get("/api/v1/runs/r/series/minute/loss"), 422)
    assert_error(api.get("/api/v1/runs/nope/series"), 404)
    assert_error(api.get("/api/v1/runs/r/series/batch/loss", params={"max_points": 1}), 422)
    assert_error(api.get("/api/v1/runs/r/series/batch/loss", params={"since_step": -1}), 422)
    assert_error(api.get("/api/v1/runs/r/series/batch/loss", params={"since_step": "x"}), 422)
    assert read(api, since_step=5)["count"] == 0


def test_metric_names_with_slashes(api):
    create_run(api, "r")
    upload(api, "r", np.array([1.0, 2.0]), name="train/loss")
    assert read(api, name="train/loss")["values"] == [1.0, 2.0]


def test_a_post_of_several_long_series_summarizes_each_as_if_posted_alone(api):
    """A big post's summaries are computed and sent in parts, cut between series: each
    series reads back downsampled exactly as the same points posted alone in one part."""
    rng = np.random.default_rng(7)
    n, names = 3000, ("a", "b", "c")  # 9,000 points: more than one part
    values = {name: rng.normal(size=n) * rng.choice([1, 50], size=n) for name in names}
    values["b"][::97] = np.nan
    steps = {name: 10_000 * k + (k + 1) * np.arange(n) for k, name in enumerate(names)}
    create_run(api, "together")
    records = [
        {
            "seq": k * n + i,
            "scope": "batch",
            "step": int(steps[name][i]),
            "wall_time": 1000.0 + i,
            "metrics": {name: as_json(values[name][i])},
        }
        for k, name in enumerate(names)
        for i in range(n)
    ]
    assert post_logs(api, "together", records).json()["accepted"] == len(records)
    for k, name in enumerate(names):
        create_run(api, f"alone-{name}")
        upload(api, f"alone-{name}", values[name], name=name, steps=steps[name], start_seq=k * n)
        lo = int(steps[name][700])
        for params in ({"max_points": 10}, {"max_points": 200}, {"max_points": 60, "since_step": lo}):
            together, alone = read(api, "together", name, **params), read(api, f"alone-{name}", name, **params)
            assert together["downsampled"] and together["steps"] == alone["steps"], (name, params)
            np.testing.assert_array_equal(together["values"], alone["values"])
