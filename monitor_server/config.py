"""Server settings: one place, read from `FITWATCH_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the server can be told; CLI flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="FITWATCH_", extra="ignore")

    database_url: str = "sqlite:///./fitwatch.db"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: SecretStr | None = Field(None, description="grants everything")
    ingest_token: SecretStr | None = Field(None, description="trainings: create runs, log, poll and ack commands")
    read_token: SecretStr | None = Field(None, description="reads, when protect_reads is on")
    protect_reads: bool = False
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed to call the API from a browser")
    allowed_hosts: list[str] | None = Field(
        None, description="Host headers served; default: loopback names when bound to loopback, else any"
    )
    stale_after: float = Field(
        120.0, gt=0, description="seconds without contact before a running run is reported interrupted"
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_config_bytes: int = Field(
        1024 * 1024, gt=0, description="largest run config, in bytes of compact JSON; a bigger one is refused (413)"
    )
    max_records: int = Field(10_000, gt=0)
    max_series_per_run: int = Field(
        10_000, gt=0, description="metric names (series) a run may have; a post that would pass it is refused whole"
    )
    pool_size: int = Field(10, ge=1, description="PostgreSQL connection pool size per process")
    max_lr: float = Field(10.0, gt=0, description="largest learning rate a set_lr command may ask for")
    max_wait: float = Field(30.0, ge=0, description="longest command long-poll, seconds")
    webhook_url: str | None = Field(
        None, pattern=r"^https?://", description="where rules with `notify` POST their firings (JSON)"
    )
    access_log: bool = Field(True, description="log every request (fitwatch serve)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("token", "ingest_token", "read_token", "webhook_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        # `FITWATCH_TOKEN=` (as compose passes an unset variable) means no token.
        return value or None

    @model_validator(mode="after")
    def _scoped_tokens_need_the_main_one(self) -> Settings:
        if self.token is None and (self.ingest_token or self.read_token or self.protect_reads):
            raise ValueError(
                "FITWATCH_INGEST_TOKEN, FITWATCH_READ_TOKEN and FITWATCH_PROTECT_READS need FITWATCH_TOKEN"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
