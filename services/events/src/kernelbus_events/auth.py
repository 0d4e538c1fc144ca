"""Token authentication, the same rules as the api: `Authorization: token|bearer <t>` or
`?token=<t>`, compared in constant time; no token configured means auth is off."""

from __future__ import annotations

import hmac

_SCHEMES = ("token", "bearer")


def token_ok(expected: str, authorization: str | None, query_token: str | None) -> bool:
    if not expected:
        return True
    offered = query_token or _from_header(authorization)
    if not offered:
        return False
    return hmac.compare_digest(offered.encode(), expected.encode())


def _from_header(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() not in _SCHEMES:
        return None
    return value.strip() or None
