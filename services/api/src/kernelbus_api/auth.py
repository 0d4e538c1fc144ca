"""Token authentication, shared by REST routes and the websocket handshake."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import cast

from fastapi import HTTPException
from starlette.requests import HTTPConnection

from kernelbus_api.settings import ApiSettings

_SCHEMES = ("token", "bearer")


def token_ok(settings: ApiSettings, authorization: str | None, query_token: str | None) -> bool:
    """True when auth is off, or the request carries the configured token.

    Accepts `Authorization: token <t>` / `bearer <t>` (scheme case-insensitive) and `?token=`.
    Compared in constant time. With auth off the header is ignored entirely, also when empty.
    """
    expected = settings.auth_token
    if not expected:
        return True
    offered = query_token if query_token else _from_header(authorization)
    if not offered:
        return False
    return hmac.compare_digest(offered.encode(), expected.encode())


def check_token(
    headers: Mapping[str, str], query: Mapping[str, str], settings: ApiSettings
) -> bool:
    """`token_ok` for a request's or websocket handshake's headers and query parameters."""
    return token_ok(settings, headers.get("authorization"), query.get("token"))


def require_token(conn: HTTPConnection) -> None:
    """Route dependency: 401 `{"reason": "Unauthorized", "message": ""}` without the token.

    Works for HTTP requests and websocket handshakes alike (both are `HTTPConnection`s).
    """
    settings = cast(ApiSettings, conn.app.state.settings)
    if not check_token(conn.headers, conn.query_params, settings):
        raise HTTPException(status_code=401)


def _from_header(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() not in _SCHEMES:
        return None
    return value.strip() or None
