"""Origin checks (PROTOCOLS §1.1), shared by REST (CORS) and the websocket handshake."""

from __future__ import annotations

from urllib.parse import urlsplit

from kernelbus_api.settings import ApiSettings


def origin_allowed(settings: ApiSettings, origin: str | None, host: str | None) -> bool:
    """No Origin → allowed; `*` → all; else Origin's host must equal Host or be allow-listed."""
    if not origin:
        return True
    allowed = settings.allow_origin.strip()
    if allowed == "*":
        return True
    if origin in {o.strip() for o in allowed.split(",") if o.strip()}:
        return True
    origin_host = urlsplit(origin).netloc
    return bool(host) and origin_host.lower() == (host or "").lower()
