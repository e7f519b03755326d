"""Log records as ingest takes them, the decoder of log bodies, and `flatten`, which turns
a post's records into the columns of its points.

A log post is the server's hot path, and building Python objects for each record is most
of the cost of reading one. msgspec decodes and checks a body straight into `Record`s at
about twice pydantic's speed. Its schema is `schemas.LogBatch`'s, never looser: whatever
it refuses goes to pydantic, which either accepts it the same way (bare NaN and Infinity
tokens, integers written as 252.0) or answers with the 422 and field paths the API
documents. So the fast path changes the speed of a post, never its outcome.
"""

from __future__ import annotations

from itertools import chain
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import numpy as np

from client_callbacks.wire import MAX_INT32, MAX_METRICS, MAX_NAME

from .errors import Invalid
from .schemas import MAX_INT64, LogBatch, Scope

# Text the database keeps cannot hold NUL, which JSON can only spell as this escape: a body
# that has it is left to pydantic's pattern check.
NUL_ESCAPE = b"\\u0000"

Step = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]
Epoch = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT32)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
Value = float | Literal["NaN", "Infinity", "-Infinity"]


class Record(msgspec.Struct, forbid_unknown_fields=True):
    """One step of one scope: the metric values a training logged there."""

    seq: Step
    scope: Scope
    step: Step
    wall_time: float  # msgspec refuses numbers past float's range, and JSON has no NaN
    metrics: Annotated[dict[Name, Value], msgspec.Meta(max_length=MAX_METRICS)]
    epoch: Epoch | None = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    records: list[Record]


_decoder = msgspec.json.Decoder(_Batch)


def decode_log_body(body: bytes) -> list[Record]:
    """The records of a log post; raises pydantic's `ValidationError` for a bad body, and
    `Invalid` for a number that no float can hold."""
    if NUL_ESCAPE not in body:
        try:
            return _decoder.decode(body).records
        except (msgspec.MsgspecError, ValueError):  # ValueError: text that is not UTF-8
            pass
    try:
        return msgspec.convert(LogBatch.model_validate_json(body).records, list[Record])
    except (msgspec.ValidationError, OverflowError):  # an integer past float's range
        raise Invalid("records: a number is past the range of a 64-bit float") from None


class Flat(NamedTuple):
    """A post's points, one per (record, metric) in record order."""

    keys: dict[tuple[str, str], int]  # series key (scope, name) -> index
    key_col: Any  # key index of each point
    values: list[Any]
    sizes: int | list[int]  # metrics per record: one number when every record has as many


def flatten(records: list[Record]) -> Flat:
    """Keras logs the same metrics in the same order every batch: then the values come out
    in one pass with no per-point Python work."""
    scope, names = records[0].scope, tuple(records[0].metrics)
    if all(r.scope == scope and tuple(r.metrics) == names for r in records):
        keys = {(scope, name): k for k, name in enumerate(names)}
        values = list(chain.from_iterable(r.metrics.values() for r in records))
        return Flat(keys, np.tile(np.arange(len(names)), len(records)), values, len(names))
    keys: dict[tuple[str, str], int] = {}
    key_col: list[int] = []
    values = []
    sizes = []
    for r in records:
        scope, metrics = r.scope, r.metrics
        sizes.append(len(metrics))
        for name, value in metrics.items():
            key_col.append(keys.setdefault((scope, name), len(keys)))
            values.append(value)
    return Flat(keys, key_col, values, sizes)
