"""Settings shared by every service: how to reach NATS. Each service subclasses this with its
own env prefix (`KERNELBUS_API_`, `KERNELBUS_WORKER_`, ...); `NATS_URL` is read by all."""

from __future__ import annotations

import ssl

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class BusSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="KERNELBUS_")

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        validation_alias=AliasChoices("NATS_URL", "KERNELBUS_NATS_URL"),
        description="Comma-separated NATS server URLs.",
    )
    nats_user: str | None = Field(
        default=None,
        validation_alias="NATS_USER",
        description="NATS user (compose: one per service).",
    )
    nats_password: str | None = Field(
        default=None, validation_alias="NATS_PASSWORD", description="Password of NATS_USER."
    )
    nats_tls_ca: str | None = Field(
        default=None,
        validation_alias=AliasChoices("NATS_TLS_CA", "KERNELBUS_NATS_TLS_CA"),
        description="CA file (PEM) that verifies the NATS server; enables TLS.",
    )
    nats_tls_cert: str | None = Field(
        default=None,
        validation_alias=AliasChoices("NATS_TLS_CERT", "KERNELBUS_NATS_TLS_CERT"),
        description="Client certificate (PEM) for NATS servers that require one.",
    )
    nats_tls_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("NATS_TLS_KEY", "KERNELBUS_NATS_TLS_KEY"),
        description="Private key (PEM) of NATS_TLS_CERT.",
    )
    nats_replicas: int = Field(
        default=0,
        ge=0,
        le=5,
        validation_alias=AliasChoices("KERNELBUS_NATS_REPLICAS"),
        description="Replicas of new KV buckets and streams (0: min(3, cluster size)).",
    )
    nats_connect_attempts: int = Field(
        default=30,
        ge=1,
        le=10_000,
        validation_alias=AliasChoices("NATS_CONNECT_ATTEMPTS", "KERNELBUS_NATS_CONNECT_ATTEMPTS"),
        description="Attempts of the initial connect, 0.5 s apart (compose starts NATS alongside).",
    )
    log_format: str = Field(
        default="text",
        validation_alias=AliasChoices("KERNELBUS_LOG_FORMAT"),
        pattern="^(text|json)$",
        description="`text`, or `json`: one JSON object per line with kernel_id and worker_id.",
    )
    log_level: str = Field(
        default="INFO",
        validation_alias=AliasChoices("KERNELBUS_LOG_LEVEL"),
        pattern="^(DEBUG|INFO|WARNING|ERROR)$",
        description="DEBUG, INFO, WARNING or ERROR.",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> BusSettings:
        if bool(self.nats_tls_cert) != bool(self.nats_tls_key):
            raise ValueError("NATS_TLS_CERT and NATS_TLS_KEY go together")
        return self

    def nats_tls(self) -> ssl.SSLContext | None:
        """The TLS context of NATS connections; None without NATS_TLS_CA or a tls:// URL."""
        if not self.nats_tls_ca and "tls://" not in self.nats_url:
            return None
        context = ssl.create_default_context(cafile=self.nats_tls_ca)
        if self.nats_tls_cert and self.nats_tls_key:
            context.load_cert_chain(self.nats_tls_cert, self.nats_tls_key)
        return context

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, value: str) -> str:
        for url in value.split(","):
            if not url.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"NATS_URL must be nats://, tls://, ws:// or wss://: {url!r}")
        return value
