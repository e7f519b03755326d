"""The published OpenAPI schema is the contract the server enforces: schemathesis, with
all of its checks, generates valid and invalid requests from it against a real server.
Nothing may answer 5xx, every answer must match the schema, a request the schema allows
must be accepted and one it forbids refused.

The seed is fixed so that CI is repeatable; FITWATCH_FUZZ_SEED picks another, and
FITWATCH_FUZZ_EXAMPLES more examples per operation."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import schemathesis

from tests.support.api import create_run, make_records, post_logs

SEED = os.environ.get("FITWATCH_FUZZ_SEED", "20261121")
EXAMPLES = os.environ.get("FITWATCH_FUZZ_EXAMPLES", "25")


@pytest.mark.slow
def test_the_api_is_what_its_schema_says_under_every_schemathesis_check(start_server, tmp_path):
    # Long-polls answer within half a second, so that a generated `wait` cannot hold a case up.
    server = start_server(max_wait=0.5)
    with server.client() as api:
        create_run(api, "r1", name="fuzz")
        post_logs(api, "r1", make_records(20))
        api.post("/api/v1/runs/r1/commands", json={"type": "set_lr", "args": {"value": 0.1}})
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    done = subprocess.run(
        [
            st,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            EXAMPLES,
            "--seed",
            SEED,
            # Event streams never end by themselves; their errors are checked below.
            "--exclude-path-regex",
            "/events$",
            "--request-timeout",
            "20",
            "--generation-database",
            ":memory:",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", done.stdout).groups())
    assert generated == passed >= 16 * 10, done.stdout[-2000:]  # every operation was exercised


def test_event_stream_errors_are_the_json_errors_its_schema_lists(server, api):
    create_run(api, "r1")
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operation = schema["/api/v1/runs/{run_id}/events"]["GET"]
    for run_id, status in (("nope", 404), ("not an id!", 422)):
        case = operation.Case(path_parameters={"run_id": run_id})
        response = case.call_and_validate(timeout=10)
        assert response.status_code == status
        assert response.headers["content-type"][0].startswith("application/json")


def test_every_single_valued_query_parameter_given_twice_is_422(server, api):
    """OpenAPI sends a parameter that is not an array once; schemathesis never repeats one,
    so this walks the schema itself."""
    create_run(api, "r1")
    schema = api.get("/openapi.json").json()
    checked = 0
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            url = re.sub(r"\{[^}]+\}", "1", path).replace("/runs/1", "/runs/r1")
            for param in operation.get("parameters", []):
                if param["in"] != "query" or param["schema"].get("type") == "array":
                    continue
                value = str(param["schema"].get("default", "1"))
                response = api.request(method, url, params=[(param["name"], value), (param["name"], value)])
                assert response.status_code == 422, (method, path, param["name"], response.text)
                [error] = response.json()["detail"]
                assert error["loc"] == ["query", param["name"]], error
                checked += 1
    assert checked >= 15
    assert api.get("/api/v1/runs", params=[("tag", "a"), ("tag", "b")]).status_code == 200  # a list: repeated
