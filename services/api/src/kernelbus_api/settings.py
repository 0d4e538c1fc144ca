"""Api settings: every one an environment variable (prefix `KERNELBUS_`), listed in README.

Invalid values make the service refuse to start (see `__main__`), never run half-configured.
"""

from __future__ import annotations

import re
import uuid

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from kernelbus.settings import BusSettings, comma_list

_KERNEL_NAME = re.compile(r"^[\w.\-%]+$")
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~\-, ]*$")


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
    trusted_proxies: str = Field(
        default="",
        pattern=r"^[0-9A-Fa-f.:, *]*$",
        description="Comma list of reverse-proxy IP addresses (or `*`) whose X-Forwarded-Host "
        "is taken as the request's host in the origin check (empty: Host only).",
    )
    allow_credentials: str = Field(
        default="", pattern="^(|true|false)$", description="Access-Control-Allow-Credentials."
    )
    allow_headers: str = Field(default="", description="Access-Control-Allow-Headers.")
    allow_methods: str = Field(default="", description="Access-Control-Allow-Methods.")
    expose_headers: str = Field(default="", description="Access-Control-Expose-Headers.")
    max_age: int | None = Field(
        default=None, ge=0, le=86400 * 365, description="Access-Control-Max-Age in seconds."
    )
    request_timeout: float = Field(
        default=30.0, gt=0, le=600, description="Seconds to wait for a worker's answer."
    )
    client_envs: str = Field(
        default="",
        description="Comma list of non-KERNEL_* request env names passed to kernels; `*` = all.",
    )
    max_kernels: int | None = Field(
        default=None, ge=1, description="Kernels allowed across all api replicas (unset: none)."
    )
    max_kernels_per_user: int | None = Field(
        default=None, ge=1, description="Kernels allowed per KERNEL_USERNAME (unset: no limit)."
    )
    authorized_users: str = Field(
        default="",
        description="Comma list of KERNEL_USERNAMEs allowed to start kernels (empty: any); a "
        "kernelspec's process_proxy.config.authorized_users replaces it.",
    )
    unauthorized_users: str = Field(
        default="root",
        description="Comma list of KERNEL_USERNAMEs refused (403), plus each kernelspec's "
        "process_proxy.config.unauthorized_users.",
    )
    user_tokens: dict[str, str] = Field(
        default={},
        repr=False,
        description='JSON `{"<token>": "<user>"}`: each token also authenticates, and binds '
        "KERNEL_USERNAME to its user (filled in; another name is 403).",
    )
    list_kernels: bool = Field(default=True, description="Serve GET /api/kernels (off: 403).")
    default_kernel_name: str = Field(default="python3", description="Kernel started by default.")
    force_kernel_name: str = Field(default="", description="Kernel started whatever is asked.")
    kernel_info_timeout: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds a restart may wait for kernel_info (and a websocket handshake for "
        "a kernel that is restarting).",
    )
    launch_timeout: float = Field(
        default=40.0,
        gt=0,
        le=3600,
        description="Launch timeout when the request has no valid KERNEL_LAUNCH_TIMEOUT.",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith("/") or "//" in value or any(c in value for c in "?#\\ "):
            raise ValueError(f"base_url must be an absolute path such as /gateway/: {value!r}")
        return value if value.endswith("/") else value + "/"

    @field_validator("default_kernel_name", "force_kernel_name")
    @classmethod
    def _kernel_name(cls, value: str) -> str:
        if value and not _KERNEL_NAME.match(value):
            raise ValueError(f"not a valid kernelspec name: {value!r}")
        return value

    @field_validator("allow_headers", "allow_methods", "expose_headers")
    @classmethod
    def _header_list(cls, value: str) -> str:
        if not _HEADER_LIST.match(value):
            raise ValueError("must be a comma list of header or method names")
        return value

    @field_validator("user_tokens")
    @classmethod
    def _user_tokens(cls, value: dict[str, str]) -> dict[str, str]:
        for token, user in value.items():
            if len(token) < 16 or not user.strip():
                # Never echo a token: name the user only.
                raise ValueError(f"user_tokens: {user!r} needs a token of 16+ characters")
        return value

    @field_validator("allow_origin")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in comma_list(value):
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"origins must be `*` or http(s) URLs: {origin!r}")
        return value

    @property
    def prefix(self) -> str:
        """base_url without its trailing slash: what routers are mounted under."""
        return self.base_url.rstrip("/")

    @property
    def client_env_names(self) -> frozenset[str]:
        return frozenset(comma_list(self.client_envs))

    @property
    def allowed_origins(self) -> frozenset[str]:
        """`allow_origin` parsed (`*` stays an item: every origin)."""
        return frozenset(comma_list(self.allow_origin))

    @property
    def trusted_proxy_set(self) -> frozenset[str]:
        return frozenset(comma_list(self.trusted_proxies))

    @property
    def authorized_user_set(self) -> frozenset[str]:
        return frozenset(comma_list(self.authorized_users))

    @property
    def unauthorized_user_set(self) -> frozenset[str]:
        return frozenset(comma_list(self.unauthorized_users))

    @property
    def allowed_message_type_set(self) -> frozenset[str]:
        """`allowed_message_types` parsed; empty means every type is forwarded."""
        return frozenset(comma_list(self.allowed_message_types))

    # --- kernel websocket (kernelbus_api.channels) ------------------------------------------
    kernel_ws_protocol: str | None = Field(
        default=None,
        description="Unset: select v1.kernel.websocket.jupyter.org when offered; '' forces legacy.",
    )
    limit_rate: bool = Field(default=True, description="Rate-limit iopub per websocket.")
    iopub_msg_rate_limit: float = Field(
        default=1000, ge=0, description="Max iopub messages/s per websocket (0: unlimited)."
    )
    iopub_data_rate_limit: float = Field(
        default=1_000_000, ge=0, description="Max iopub stream bytes/s per websocket (0: off)."
    )
    rate_limit_window: float = Field(
        default=3, gt=0, le=3600, description="Seconds over which iopub rates are averaged."
    )
    ws_ping_interval: float = Field(
        default=30, ge=0, le=3600, description="Seconds between websocket pings (0 disables)."
    )
    ws_max_message_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Largest client websocket frame accepted; larger ones close with 1009.",
    )
    allowed_message_types: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_, ]*$",
        description="Comma list of client msg_types the websocket forwards (empty: all).",
    )
    allow_tracebacks: bool = Field(
        default=True,
        description="Off: iopub `error` messages reach clients as ExecutionError, no traceback.",
    )
    traceback_replacement_message: str = Field(
        default="An exception occurred at runtime, which is not shown due to security reasons.",
        max_length=1000,
        description="The traceback clients see when KERNELBUS_ALLOW_TRACEBACKS is off.",
    )
    drop_buffers_for_tornado_clients: bool = Field(
        default=False,
        description="Strip binary buffers sent to legacy clients whose User-Agent is Tornado/* "
        "(jupyter_server's relay stops reading at the first binary frame).",
    )
