"""Token authentication, shared by REST routes and the websocket handshake."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from fastapi import HTTPException
from starlette.requests import HTTPConnection

from kernelbus import tokens
from kernelbus_api.settings import ApiSettings


def token_ok(settings: ApiSettings, authorization: str | None, query_token: str | None) -> bool:
    """True when auth is off, or the request carries the configured token (`kernelbus.tokens`)
    or one of the users' tokens (`KERNELBUS_USER_TOKENS`)."""
    if not settings.user_tokens:
        return tokens.token_ok(settings.auth_token, authorization, query_token)
    offered = tokens.offered(authorization, query_token)
    if not offered:
        return False
    if settings.auth_token and tokens.matches(offered, settings.auth_token):
        return True
    return token_user(settings, authorization, query_token) is not None


def token_user(
    settings: ApiSettings, authorization: str | None, query_token: str | None
) -> str | None:
    """The user `KERNELBUS_USER_TOKENS` binds the request's token to; None for the shared
    token or when no user tokens are configured. Every entry is compared (constant time)."""
    offered = tokens.offered(authorization, query_token)
    if not offered or not settings.user_tokens:
        return None
    found = None
    for token, user in settings.user_tokens.items():
        if tokens.matches(offered, token):
            found = user
    return found


def bound_user(conn: HTTPConnection) -> str | None:
    """Route dependency: the user the request's token is bound to, if any."""
    settings = cast(ApiSettings, conn.app.state.settings)
    return token_user(settings, conn.headers.get("authorization"), conn.query_params.get("token"))


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
