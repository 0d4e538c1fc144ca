"""Api settings: every one an environment variable (prefix `KERNELBUS_`), listed in README."""

from __future__ import annotations

import uuid

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from kernelbus.settings import BusSettings


class ApiSettings(BusSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="KERNELBUS_")

    ip: str = Field(default="127.0.0.1", description="Address the api listens on.")
    port: int = Field(default=8888, ge=1, le=65535, description="Port the api listens on.")
    auth_token: str = Field(default="", description="Token required on every route when set.")
    base_url: str = Field(default="/", description="Prefix of every route.")
    api_instance: str = Field(
        default_factory=lambda: f"api-{uuid.uuid4().hex[:12]}",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Id of this api replica (connection counts are kept per replica).",
    )
    allow_origin: str = Field(
        default="",
        description="`*`, or a comma list of origins allowed besides the api's own host.",
    )
    request_timeout: float = Field(
        default=30.0, gt=0, le=600, description="Seconds to wait for a worker's answer."
    )
