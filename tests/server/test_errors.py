"""Error details name what was wrong without echoing a long input whole."""

from __future__ import annotations

import json

import pytest

from tests.support.api import assert_error, create_run, make_records

LONG = "x" * 5000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/runs/r/logs", {"records": [{**make_records(1)[0], "metrics": {LONG: 1.0}}]}),
        ("/api/v1/runs/r/logs", {"records": [{**make_records(1)[0], "metrics": {"a\x00" + LONG: 1.0}}]}),
        ("/api/v1/runs/r/commands", {"type": LONG}),
        ("/api/v1/runs", {"id": "r2", LONG: 1}),
    ],
    ids=["metric-name", "metric-name-with-nul", "command-type", "field-name"],
)
def test_a_422_echoes_a_bounded_prefix_of_a_long_input(api, path, body):
    create_run(api, "r")
    detail = assert_error(api.post(path, json=body), 422)
    echoed = json.dumps(detail)
    assert len(echoed) < 1000, echoed
    assert "x" * 50 in echoed, echoed  # which input it was is still plain
