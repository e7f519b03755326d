"""Log ingest: the hot path of the server.

The body is decoded and checked in one pass straight from bytes (`domain.records`), and
stored by the log writer (`services.ingest`), which stores many posts a transaction; a big
body is stored in parts, each announced on the streams as it is committed.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ...domain.errors import Invalid
from ...domain.records import decode_log_body
from ...domain.schemas import LogResult
from ...infra.writer import slices
from ...services.ingest import store_posts
from ...store.logs import Post
from ..access import Ingester
from ..deps import IngestDep, RunIdPath

router = APIRouter(prefix="/api/v1/runs/{run_id}", tags=["logs"])

INLINE_DECODE_BYTES = 64 * 1024  # about 500 records: well under a millisecond

LOG_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LogBatch"}}},
    }
}


@router.post("/logs", response_model=LogResult, dependencies=[Ingester], openapi_extra=LOG_BODY)
async def post_logs(run_id: RunIdPath, request: Request, ingest: IngestDep) -> LogResult:
    """Store a batch of records, each `(run, seq)` once; answer with the commands the
    training has not acknowledged yet."""
    body = await request.body()

    def decode() -> list[Post]:
        records = decode_log_body(body)
        if len(records) > ingest.settings.max_records:
            raise Invalid(f"at most {ingest.settings.max_records} records a request, got {len(records)}")
        return slices(run_id, records)

    # A small body decodes faster than a hop to the thread pool and back, which under load
    # waits its turn for the interpreter lock; a large one must not hold up the event loop.
    posts = decode() if len(body) <= INLINE_DECODE_BYTES else await run_in_threadpool(decode)
    return await store_posts(ingest, run_id, posts)
