"""Reads for many runs at once: runs by id with their configs, the series a set of runs
has, and one series of each run in one answer, downsampled as a single run's read is."""

from __future__ import annotations

import pytest

from tests.support.api import assert_error, create_run, make_records, post_logs


def test_runs_by_id_come_with_their_configs_only_when_asked(api):
    for i in range(5):
        create_run(api, f"r{i}", config={"lr": i / 10})
    response = api.get("/api/v1/runs", params={"id": ["r1", "r3", "nope"], "config": "true"})
    assert response.status_code == 200, response.text
    assert response.headers["X-Total-Count"] == "2"
    assert {run["id"]: run["config"] for run in response.json()} == {"r1": {"lr": 0.1}, "r3": {"lr": 0.3}}

    plain = api.get("/api/v1/runs", params={"id": ["r1", "r3"]}).json()
    assert [run["id"] for run in plain] == ["r3", "r1"] and all("config" not in run for run in plain)


def test_runs_with_configs_are_read_a_hundred_at_most_and_points_two_hundred_thousand(api):
    ids = [f"r{i:03d}" for i in range(101)]
    for run_id in ids:
        create_run(api, run_id, config={"lr": 0.1})
        post_logs(api, run_id, make_records(3))
    many = api.get("/api/v1/runs", params={"config": "true", "limit": 1000})  # a page of configs is 100 runs
    assert many.status_code == 200 and len(many.json()) == 100 and many.headers["X-Total-Count"] == "101"
    assert all(run["config"] == {"lr": 0.1} for run in many.json())
    # 100 runs of 5,000 points would be 500,000: each run's share is lowered to 2,000.
    body = api.get("/api/v1/series/batch/loss", params={"runs": ",".join(ids[:100]), "max_points": 5000}).json()
    assert body["max_points"] == 2000 and len(body["series"]) == 100
    assert_error(api.get("/api/v1/runs", params={"id": [f"r{i}" for i in range(101)]}), 422)
    assert_error(api.get("/api/v1/runs", params={"id": "bad id"}), 422)


def test_the_series_of_several_runs_name_the_runs_that_have_each(api):
    create_run(api, "a")
    create_run(api, "b")
    create_run(api, "c")
    post_logs(api, "a", make_records(3, metrics=("loss", "accuracy")))
    post_logs(api, "b", make_records(3, metrics=("loss",)))
    response = api.get("/api/v1/series", params={"runs": "c,b,a"})
    assert response.status_code == 200, response.text
    assert response.json() == [
        {"scope": "batch", "name": "accuracy", "runs": ["a"]},
        {"scope": "batch", "name": "loss", "runs": ["b", "a"]},  # in the order asked
    ]


def test_one_series_of_each_run_is_read_in_one_answer(api):
    for run_id, n in (("a", 50), ("b", 5000), ("c", 0)):
        create_run(api, run_id)
        if n:
            post_logs(api, run_id, make_records(n))
    response = api.get("/api/v1/series/batch/loss", params={"runs": "b,c,a", "max_points": 100})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["missing"] == ["c"]
    assert [s["run_id"] for s in body["series"]] == ["b", "a"]
    b, a = body["series"]
    one = api.get("/api/v1/runs/b/series/batch/loss", params={"max_points": 100}).json()
    assert {k: b[k] for k in one if k not in ("scope", "name")} == {
        k: v for k, v in one.items() if k not in ("scope", "name")
    }
    assert b["downsampled"] and b["count"] == 5000 and len(b["steps"]) < 5000
    assert a["count"] == 50 and a["steps"] == list(range(50)) and not a["downsampled"]

    zoomed = api.get("/api/v1/series/batch/loss", params={"runs": "a", "since_step": 10, "until_step": 19}).json()
    assert zoomed["series"][0]["steps"] == list(range(10, 20))


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"runs": "a,no-such"}, 404, "'no-such'"),
        ({"runs": "a,bad id"}, 422, "'bad id' is not a run id"),
        ({"runs": "a,,b"}, 422, "'' is not a run id"),
        ({"runs": ",".join(f"r{i}" for i in range(101))}, 422, "101 runs, at most 100"),
        ({}, 422, "runs"),
    ],
)
def test_reads_across_runs_refuse_bad_input_saying_why(api, params, status, says):
    create_run(api, "a")
    post_logs(api, "a", make_records(3))
    for path in ("/api/v1/series/batch/loss", "/api/v1/series"):
        if path == "/api/v1/series" and "max_points" in params:
            continue
        detail = assert_error(api.get(path, params=params), status)
        assert says in str(detail), detail
    assert_error(api.get("/api/v1/series/nope/loss", params={"runs": "a"}), 422)
