"""The fast decoder of log bodies is never looser than the published schema, and reads what it
accepts exactly as pydantic does: drawn bodies mix good and bad values in every field."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor_server.domain.errors import Invalid
from monitor_server.domain.records import decode_log_body
from monitor_server.domain.schemas import LogBatch

STEP = st.one_of(st.integers(0, 2**63 - 1), st.just(252.0))
VALUE = st.one_of(st.floats(), st.integers(-(2**70), 2**70), st.sampled_from(["NaN", "Infinity", "-Infinity"]))
NAME = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=4)
GOOD = {
    "seq": STEP,
    "scope": st.sampled_from(["batch", "epoch", "eval"]),
    "step": STEP,
    "epoch": st.one_of(st.none(), st.integers(0, 2**31 - 1), st.just(3.0)),
    "wall_time": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**60), 2**60)),
    "metrics": st.dictionaries(NAME, VALUE, max_size=4),
}
BAD = {
    "seq": [-1, 2**63, 1.5, True, None, "1", float("nan")],
    "scope": ["train", 1, None],
    "step": [-1, 2**63, 1e300, False],
    "epoch": [-1, 2**31, 0.5, "1"],
    "wall_time": [float("inf"), float("nan"), 10**400, "1.0", None, True],
    "metrics": [
        [1],
        None,
        "x",
        {"": 1},
        {"x" * 201: 1},
        {"lo\x00ss": 1},
        {"a": "nan"},
        {"a": "1.5"},
        {"a": True},
        {"a": None},
        {"a": [1]},
        {"a": 10**400},
        {f"m{i}": 1 for i in range(1001)},
    ],
}


def good_record(draw) -> dict:
    record = {key: draw(values) for key, values in GOOD.items()}
    if draw(st.booleans()):
        del record["epoch"]  # it may be left out
    return record


def outcome(read):
    try:
        return msgspec.to_builtins(read())
    except Invalid:
        return "out of range"
    except (ValidationError, OverflowError):  # pydantic overflows on huge integer wall times
        return "refused"


def pydantic_reading(body: bytes):
    batch = LogBatch.model_validate_json(body)
    return [{"epoch": None, **r} for r in batch.records]


def body_of(records: list[dict], ascii: bool = True) -> bytes:
    # Python's json writes NaN and Infinity as bare tokens, as the Keras client does.
    return json.dumps({"records": records}, ensure_ascii=ascii).encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.composite(good_record)(), max_size=3), st.booleans())
def test_good_bodies_are_read_as_the_schema_reads_them(drawn, ascii):
    body = body_of(drawn, ascii)
    slow = pydantic_reading(body)
    expected = [{**r, "wall_time": float(r["wall_time"]), "metrics": normal(r["metrics"])} for r in slow]
    assert json.dumps(msgspec.to_builtins(decode_log_body(body)), sort_keys=True) == json.dumps(
        expected, sort_keys=True
    )


GOOD_RECORD = {"seq": 1, "scope": "batch", "step": 1, "epoch": 0, "wall_time": 1.5, "metrics": {"loss": 0.5}}
CHANGES = [(key, bad) for key, values in BAD.items() for bad in values]
CHANGES += [(key, "missing") for key in GOOD_RECORD if key != "epoch"] + [("loss", 1)]


@pytest.mark.parametrize(("key", "bad"), CHANGES, ids=[f"{key}={str(bad)[:12]}" for key, bad in CHANGES])
def test_a_body_with_one_thing_wrong_is_refused_as_the_schema_refuses_it(key, bad):
    record = {k: v for k, v in GOOD_RECORD.items() if k != key or bad != "missing"}
    if bad != "missing":
        record[key] = bad
    body = body_of([GOOD_RECORD, record])
    fast = outcome(lambda: decode_log_body(body))
    slow = outcome(lambda: pydantic_reading(body))
    if slow != "refused":  # pydantic keeps an integer value that no float can hold; it cannot be stored
        assert (key, bad, fast) == ("metrics", {"a": 10**400}, "out of range")
    else:
        assert fast in ("refused", "out of range")


def normal(metrics: dict) -> dict:
    return {k: v if isinstance(v, str) else float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_bare_tokens_are_read_as_floats(token):
    body = b'{"records": [{"seq": 1, "scope": "batch", "step": 1, "wall_time": 1, "metrics": {"a": %s}}]}' % token
    value = decode_log_body(body)[0].metrics["a"]
    assert repr(value) == repr(float(token.decode()))
