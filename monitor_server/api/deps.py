"""What handlers get from the app: engine, settings and event bus."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy import Engine

from ..config import Settings
from ..events import EventBus
from ..schemas import RUN_ID_PATTERN


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _bus(request: Request) -> EventBus:
    return request.app.state.bus


EngineDep = Annotated[Engine, Depends(_engine)]
SettingsDep = Annotated[Settings, Depends(_settings)]
BusDep = Annotated[EventBus, Depends(_bus)]
RunIdPath = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="run id, [A-Za-z0-9_.-]{1,64}")]
