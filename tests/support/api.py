"""Over the HTTP API: the error-shape check, record builders, and readers of what a run stored."""

from __future__ import annotations

import json

import httpx

JSON = {"content-type": "application/json"}
# What fitwatch's client sends on every request, and a page on another site cannot.
TRAINING = {"x-fitwatch-client": "1"}


def assert_error(response: httpx.Response, status: int) -> object:
    """The response is `status` with the one error shape, `{"detail": ...}`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail"} and body["detail"], body
    return body["detail"]


def make_records(n: int, start: int = 0, scope: str = "batch", metrics=("loss", "accuracy")) -> list[dict]:
    """`n` records with seq and step from `start`, deterministic values."""
    return [
        {
            "seq": start + i,
            "scope": scope,
            "step": start + i,
            "epoch": (start + i) // 100,
            "wall_time": 1_700_000_000.0 + start + i,
            "metrics": {m: round(1.0 / (start + i + k + 1), 12) for k, m in enumerate(metrics)},
        }
        for i in range(n)
    ]


def create_run(api: httpx.Client, run_id: str = "r1", **fields) -> dict:
    response = api.post("/api/v1/runs", json={"id": run_id, **fields})
    assert response.status_code in (200, 201), response.text
    return response.json()


def post_logs(api: httpx.Client, run_id: str, records: list[dict]) -> httpx.Response:
    return api.post(f"/api/v1/runs/{run_id}/logs", json={"records": records})


def add_rule(api: httpx.Client, **body) -> dict:
    response = api.post("/api/v1/rules", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def batch_steps(api: httpx.Client, run_id: str, name: str = "loss") -> list[int]:
    body = api.get(f"/api/v1/runs/{run_id}/series/batch/{name}", params={"max_points": 100000}).json()
    return body["steps"]


def records(api: httpx.Client, run_id: str) -> list[dict]:
    """Every stored record of the run, from the JSONL export."""
    return [json.loads(line) for line in api.get(f"/api/v1/runs/{run_id}/export.jsonl").text.splitlines()]
