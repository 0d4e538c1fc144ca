"""Origin check and CORS headers for plain HTTP (PROTOCOLS §1.1), as pure ASGI middleware.

Kernel Gateway answers a blocked cross-origin request with 404; Kernelbus answers 403 with a
message saying why, so an operator sees the cause (docs/decisions/0002-api-rest.md).
Websocket handshakes pass through: the channels handler applies `origin_allowed` itself.
OPTIONS (CORS preflight) is answered here, before routing and authentication.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernelbus_api.errors import error_response
from kernelbus_api.origin import origin_allowed, request_host
from kernelbus_api.settings import ApiSettings


def cors_headers(settings: ApiSettings, origin: str | None) -> dict[str, str]:
    """The Access-Control-* headers of KG's CORSMixin, from the KERNELBUS_ALLOW_* settings."""
    headers: dict[str, str] = {}
    allowed = settings.allow_origin.strip()
    if allowed == "*":
        headers["Access-Control-Allow-Origin"] = "*"
    elif allowed and origin and origin_allowed(settings, origin, None):
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    optional = {
        "Access-Control-Allow-Credentials": settings.allow_credentials,
        "Access-Control-Allow-Headers": settings.allow_headers,
        "Access-Control-Allow-Methods": settings.allow_methods,
        "Access-Control-Expose-Headers": settings.expose_headers,
        "Access-Control-Max-Age": "" if settings.max_age is None else str(settings.max_age),
    }
    headers.update({k: v for k, v in optional.items() if v})
    return headers


class CorsMiddleware:
    def __init__(self, app: ASGIApp, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers = Headers(scope=scope)
        origin = request_headers.get("origin")
        extra = cors_headers(self.settings, origin)
        client = scope.get("client")
        host = request_host(self.settings, request_headers, client[0] if client else None)
        if not origin_allowed(self.settings, origin, host):
            message = f"Blocking cross origin API request from {origin}"
            await error_response(403, message)(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await Response(status_code=200, headers=extra)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(extra)
            await send(message)

        await self.app(scope, receive, send_with_headers)
