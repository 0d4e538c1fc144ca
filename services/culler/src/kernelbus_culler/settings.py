"""Culler settings: environment variables with the prefix `KERNELBUS_CULLER_` (plus `NATS_URL`).

The culling ones follow jupyter_server's `MappingKernelManager` traits (PROTOCOLS.md §5.1).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from kernelbus.settings import BusSettings

log = logging.getLogger(__name__)

DEFAULT_CULL_INTERVAL = 300.0


class CullerSettings(BusSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="KERNELBUS_CULLER_")

    cull_idle_timeout: float = Field(
        default=0.0,
        ge=0,
        description="Seconds of inactivity after which a kernel is culled; 0 disables culling.",
    )
    cull_interval: float = Field(
        default=DEFAULT_CULL_INTERVAL,
        description="Seconds between two culling passes; 0 or less falls back to 300.",
    )
    cull_connected: bool = Field(default=False, description="Also cull kernels with websockets.")
    cull_busy: bool = Field(default=False, description="Also cull kernels that are busy.")
    kernelspec_timeouts: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description='Per-kernelspec idle timeouts, JSON `{"python3": 600}`; win over metadata.',
    )
    culler_id: str = Field(
        default_factory=lambda: f"culler-{uuid.uuid4().hex[:12]}",
        pattern=r"^[A-Za-z0-9_-]+$",
        max_length=128,
        description="Id of this culler replica (written into leases and kernel_culled events).",
    )
    worker_check_interval: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="Seconds between two looks for lost workers (heartbeat aged out).",
    )
    worker_disconnect_grace: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="Seconds a worker's liveness subject may have no responder (no NATS "
        "connection left) before it is lost, without waiting for its heartbeat to age out; "
        "0 = off. Only where something answers for the worker while its process restarts "
        "(kernelbus-worker-init: compose sets 4). ADR 0016.",
    )
    worker_probe_interval: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds between liveness probes of the workers (with a disconnect grace).",
    )
    command_timeout: float = Field(
        default=30.0, gt=0, le=600, description="Seconds to wait for a worker's shutdown answer."
    )
    cull_concurrency: int = Field(
        default=8, ge=1, le=256, description="Kernels shut down at once during one pass."
    )
    health_port: int = Field(
        default=0, ge=0, le=65535, description="Port of the liveness endpoint; 0 = off."
    )
    health_ip: str = Field(default="127.0.0.1", description="Address of the liveness endpoint.")

    @field_validator("cull_interval")
    @classmethod
    def _interval_fallback(cls, value: float) -> float:
        if value <= 0:
            log.warning(
                "Invalid value for cull_interval detected (%s) - using default value (%s).",
                value,
                DEFAULT_CULL_INTERVAL,
            )
            return DEFAULT_CULL_INTERVAL
        return value

    @field_validator("kernelspec_timeouts", mode="before")
    @classmethod
    def _timeouts_json(cls, value: Any) -> Any:
        if isinstance(value, str | bytes):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError as exc:
                raise ValueError(f'must be a JSON object like {{"python3": 600}}: {exc}') from exc
        return value

    @field_validator("kernelspec_timeouts")
    @classmethod
    def _timeouts_non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: t for name, t in value.items() if t < 0}
        if bad:
            raise ValueError(f"kernelspec timeouts must be >= 0 seconds: {bad}")
        return value

    @property
    def culling_enabled(self) -> bool:
        """jupyter_server runs the culler only while the global timeout is > 0."""
        return self.cull_idle_timeout > 0

    @property
    def lease_max_age(self) -> float:
        """A lease older than this was left by a culler that died mid-cull."""
        return max(2 * self.cull_interval, 2 * self.command_timeout)
