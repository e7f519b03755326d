"""Fuzz: schemathesis generates requests from the server's own OpenAPI schema, valid and
invalid, against a real server. Nothing may answer 5xx, and every answer must match the
schema (status codes, content types, bodies). The number of examples is bounded.

Hypothesis drives schemathesis's strategies directly (not its pytest plugin), so the test
does not depend on pytest internals."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.helpers import create_run, make_records, post_logs

EXAMPLES = 25  # an operation


def test_api_never_fails_and_matches_its_schema(server, api):
    # A run with points and a command, so that generated ids sometimes hit real rows.
    create_run(api, "r1", name="fuzz")
    post_logs(api, "r1", make_records(20))
    api.post("/api/v1/runs/r1/commands", json={"type": "set_lr", "args": {"value": 0.1}})
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # Event streams never end; test_events.py covers them.
    operations = [op for op in operations if not op.path.endswith("/events")]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            # Responses must match the schema; a request the schema allows may still be
            # refused (set_lr needs args, integers must be JSON integers, limits are settings).
            case.call_and_validate(timeout=10, excluded_checks=[positive_data_acceptance])

        check()
