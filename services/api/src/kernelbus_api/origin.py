"""Origin checks (PROTOCOLS §1.1), shared by REST (CORS) and the websocket handshake."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from kernelbus_api.settings import ApiSettings


def origin_allowed(settings: ApiSettings, origin: str | None, host: str | None) -> bool:
    """No Origin → allowed; `*` → all; else Origin's host must equal Host or be allow-listed."""
    if not origin:
        return True
    allowed = settings.allow_origin.strip()
    if allowed == "*":
        return True
    if origin in settings.allowed_origins:
        return True
    origin_host = urlsplit(origin).netloc
    return bool(host) and origin_host.lower() == (host or "").lower()


def request_host(settings: ApiSettings, headers: Mapping[str, str], peer: str | None) -> str | None:
    """The host the client addressed: `Host`, or behind a trusted reverse proxy (the peer's
    address is in `KERNELBUS_TRUSTED_PROXIES`) the first `X-Forwarded-Host` it sent."""
    forwarded = headers.get("x-forwarded-host", "").split(",")[0].strip()
    if forwarded and _trusted(settings, peer):
        return forwarded
    return headers.get("host")


def _trusted(settings: ApiSettings, peer: str | None) -> bool:
    proxies = settings.trusted_proxy_set
    return "*" in proxies or (peer is not None and peer in proxies)
