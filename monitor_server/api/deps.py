"""What handlers get from the app: engine, settings, event bus, webhooks and log writer.

The getters are `async`: FastAPI runs a plain function dependency in its thread pool, a
thread hop for an attribute read, several a request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy import Engine

from ..config import Settings
from ..events import EventBus
from ..schemas import RUN_ID_PATTERN
from ..webhooks import Webhooks
from ..writer import LogWriter


async def _engine(request: Request) -> Engine:
    return request.app.state.engine


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _bus(request: Request) -> EventBus:
    return request.app.state.bus


async def _webhooks(request: Request) -> Webhooks:
    return request.app.state.webhooks


async def _writer(request: Request) -> LogWriter:
    return request.app.state.writer


EngineDep = Annotated[Engine, Depends(_engine)]
SettingsDep = Annotated[Settings, Depends(_settings)]
BusDep = Annotated[EventBus, Depends(_bus)]
WebhooksDep = Annotated[Webhooks, Depends(_webhooks)]
WriterDep = Annotated[LogWriter, Depends(_writer)]
RunIdPath = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="run id, [A-Za-z0-9_.-]{1,64}")]
