"""Token authentication, shared by REST routes and the websocket handshake."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from fastapi import HTTPException
from starlette.requests import HTTPConnection

from kernelbus import tokens
from kernelbus_api.settings import ApiSettings


def token_ok(settings: ApiSettings, authorization: str | None, query_token: str | None) -> bool:
    """True when auth is off, or the request carries the configured token (`kernelbus.tokens`)."""
    return tokens.token_ok(settings.auth_token, authorization, query_token)


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
