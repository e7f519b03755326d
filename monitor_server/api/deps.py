"""What handlers get from the app: engine, settings, event bus and webhooks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy import Engine

from ..config import Settings
from ..events import EventBus
from ..schemas import RUN_ID_PATTERN
from ..webhooks import Webhooks


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _bus(request: Request) -> EventBus:
    return request.app.state.bus


def _webhooks(request: Request) -> Webhooks:
    return request.app.state.webhooks


EngineDep = Annotated[Engine, Depends(_engine)]
SettingsDep = Annotated[Settings, Depends(_settings)]
BusDep = Annotated[EventBus, Depends(_bus)]
WebhooksDep = Annotated[Webhooks, Depends(_webhooks)]
RunIdPath = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="run id, [A-Za-z0-9_.-]{1,64}")]
