"""Settings shared by every service: how to reach NATS, logging, memory. Each service
subclasses this with its own env prefix (`KERNELBUS_API_`, `KERNELBUS_WORKER_`, ...);
`NATS_URL` is read by all."""

from __future__ import annotations

import ssl
import sys
from typing import TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernelbus.memory import DEFAULT_KEEP_BYTES


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
    malloc_keep_bytes: int = Field(
        default=DEFAULT_KEEP_BYTES,
        ge=0,
        le=1 << 34,
        validation_alias=AliasChoices("KERNELBUS_MALLOC_KEEP_BYTES"),
        description="Freed heap the api, worker and iopub keeper keep for the next large "
        "message instead of returning it at once (glibc; 0: the C library's defaults).",
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

    @property
    def nats_servers(self) -> tuple[str, ...]:
        """`NATS_URL` parsed: the server URLs, in order."""
        return comma_list(self.nats_url)

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
        for url in comma_list(value):
            if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"NATS_URL must be nats://, tls://, ws:// or wss://: {url!r}")
        return value


def comma_list(value: str) -> tuple[str, ...]:
    """The one syntax of every comma-list setting: items split on `,`, stripped, empty ones
    dropped (`" a, b,,"` → `("a", "b")`). Settings classes parse with it; use sites read the
    parsed properties."""
    return tuple(item for item in (part.strip() for part in value.split(",")) if item)


S = TypeVar("S", bound=BaseSettings)


def load_settings(settings_class: type[S], service: str) -> S:
    """A service's settings from its environment, or exit 2 naming each invalid variable and
    why (no traceback): a bad value refuses to start instead of failing at first use."""
    try:
        return settings_class()
    except ValidationError as exc:
        lines = [
            f"  {env_name(settings_class, error['loc'])}: {error['msg']}" for error in exc.errors()
        ]
        print(f"{service}: invalid settings, refusing to start:", *lines, sep="\n", file=sys.stderr)
        raise SystemExit(2) from None


def env_name(settings_class: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    """The environment variable an error's location names: an alias is one already
    (`NATS_URL`), a field name gets the class's prefix (`pool` → `KERNELBUS_WORKER_POOL`)."""
    name = str(loc[0]) if loc else "?"
    if name.isupper():
        return name
    return f"{settings_class.model_config.get('env_prefix', '')}{name}".upper()
