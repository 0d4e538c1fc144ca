"""Token checks shared by every HTTP surface (api, events): `Authorization: token|bearer <t>`
(scheme case-insensitive) or `?token=<t>`, compared in constant time."""

from __future__ import annotations

import hmac

_SCHEMES = ("token", "bearer")


def token_ok(expected: str, authorization: str | None, query_token: str | None) -> bool:
    """True when no token is configured (the header is then ignored, even when empty), or the
    request carries `expected`. `?token=` takes precedence over the header, as in KG."""
    if not expected:
        return True
    offered = query_token or _from_header(authorization)
    if not offered:
        return False
    return hmac.compare_digest(offered.encode(), expected.encode())


def offered(authorization: str | None, query_token: str | None) -> str | None:
    """The token a request carries (`?token=` first, as in KG), if any."""
    return query_token or _from_header(authorization)


def matches(offered_token: str, expected: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(offered_token.encode(), expected.encode())


def _from_header(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() not in _SCHEMES:
        return None
    return value.strip() or None
