"""Settings of the embedded launcher's supervision (`kernelbus run`), read from the
environment. The deployment itself (ports, data dir, token) is configured by the variables the
launcher passes on to the services (README, Configuration)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class LauncherSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="KERNELBUS_LAUNCHER_")

    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Loopback port of the launcher's `/metrics` (restarts per process); "
        "0 = a free port, printed at start.",
    )
    max_restarts: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Restarts of one process within the restart window before the launcher "
        "calls it a crash loop and stops everything.",
    )
    restart_window: float = Field(
        default=60.0, gt=0, description="Seconds over which restarts are counted."
    )
    restart_delay: float = Field(
        default=0.25,
        ge=0,
        description="Seconds before the first restart; doubles with each restart in the window.",
    )
    restart_delay_max: float = Field(
        default=10.0, ge=0, description="Longest wait before a restart, in seconds."
    )

    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        validation_alias=AliasChoices("KERNELBUS_WORKERS"),
        description="Kernel-workers `kernelbus run` starts, each with its own id "
        "(`local-<n>`) and runtime dir.",
    )
    nats_nodes: int = Field(
        default=1,
        ge=1,
        le=7,
        validation_alias=AliasChoices("KERNELBUS_NATS_NODES"),
        description="nats-server nodes `kernelbus run` starts: more than 1 forms a local "
        "JetStream cluster (routes on loopback; every service gets every URL).",
    )

    @model_validator(mode="after")
    def _delays(self) -> LauncherSettings:
        if self.restart_delay_max < self.restart_delay:
            raise ValueError("restart_delay_max is smaller than restart_delay")
        return self
