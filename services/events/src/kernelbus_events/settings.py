"""Events service settings: every one an environment variable (prefix `KERNELBUS_EVENTS_`)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from kernelbus.settings import BusSettings


def _default_db_path() -> Path:
    data_dir = os.environ.get("KERNELBUS_DATA_DIR")
    base = Path(data_dir) if data_dir else Path(".kernelbus")
    return base / "events.sqlite"


class EventsSettings(BusSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="KERNELBUS_EVENTS_")

    ip: str = Field(default="127.0.0.1", description="Address the query API listens on.")
    port: int = Field(default=8889, ge=1, le=65535, description="Port of the query API.")
    db_path: Path = Field(
        default_factory=_default_db_path,
        description="SQLite file; default `$KERNELBUS_DATA_DIR/events.sqlite`.",
    )
    auth_token: str = Field(
        default="",
        validation_alias=AliasChoices("KERNELBUS_AUTH_TOKEN", "KERNELBUS_EVENTS_AUTH_TOKEN"),
        description="Token required on every route but health when set.",
    )
    consumer: str = Field(
        default="kernelbus-events",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Durable consumer name; replicas sharing it share the work.",
    )
    max_deliver: int = Field(default=20, ge=1, le=10_000, description="Deliveries per event.")
    ack_wait: float = Field(
        default=30.0, ge=1, le=3600, description="Seconds a fetched event may stay unacked."
    )
    batch: int = Field(default=64, ge=1, le=1000, description="Events fetched per pull.")
    page_limit: int = Field(default=1000, ge=1, le=100_000, description="Largest query page.")
