"""Log records as ingest takes them, and the decoder of log bodies.

A log post is the server's hot path, and building Python objects for each record is most
of the cost of reading one. msgspec decodes and checks a body straight into `Record`s at
about twice pydantic's speed. Its schema is `schemas.LogBatch`'s, never looser: whatever
it refuses goes to pydantic, which either accepts it the same way (bare NaN and Infinity
tokens, integers written as 252.0) or answers with the 422 and field paths the API
documents. So the fast path changes the speed of a post, never its outcome.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .errors import Invalid
from .schemas import MAX_INT64, LogBatch, Scope

# Text the database keeps cannot hold NUL, which JSON can only spell as this escape: a body
# that has it is left to pydantic's pattern check.
NUL_ESCAPE = b"\\u0000"

Step = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]
Epoch = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Value = float | Literal["NaN", "Infinity", "-Infinity"]


class Record(msgspec.Struct, forbid_unknown_fields=True):
    """One step of one scope: the metric values a training logged there."""

    seq: Step
    scope: Scope
    step: Step
    wall_time: float  # msgspec refuses numbers past float's range, and JSON has no NaN
    metrics: Annotated[dict[Name, Value], msgspec.Meta(max_length=1000)]
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
