"""Liveness, for load balancers and the Docker healthcheck."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from ...domain.schemas import Health
from ...infra.db import backend, reading
from ..deps import EngineDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(engine: EngineDep) -> Health:
    """The server is up and its database answers."""
    with reading(engine) as conn:
        conn.execute(text("SELECT 1"))
    return Health(status="ok", database=backend(engine))
