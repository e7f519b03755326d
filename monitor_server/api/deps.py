"""What handlers get from the app: engine, settings, event bus, and the write check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy import Engine

from ..config import Settings
from ..errors import Unauthorized
from ..events import EventBus
from ..schemas import RUN_ID_PATTERN


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _bus(request: Request) -> EventBus:
    return request.app.state.bus


def require_token(request: Request) -> None:
    """Writes need `Authorization: Bearer <FITWATCH_TOKEN>` when a token is set."""
    token = request.app.state.settings.token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise Unauthorized("missing or wrong bearer token")


EngineDep = Annotated[Engine, Depends(_engine)]
SettingsDep = Annotated[Settings, Depends(_settings)]
BusDep = Annotated[EventBus, Depends(_bus)]
Writer = Depends(require_token)
RunIdPath = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="run id, [A-Za-z0-9_.-]{1,64}")]
