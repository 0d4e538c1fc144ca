"""Timestamps exactly as Jupyter clients parse them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_OFFSET = re.compile(r"[+-]\d\d:?\d\d$")

JUPYTER_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> datetime:
    return datetime.now(UTC)


def jupyter_timestamp(value: datetime) -> str:
    """`2026-11-21T22:21:58.929195Z`: always six fractional digits and a `Z`.

    `isoformat()` drops the fraction at 0 µs and writes `+00:00`; the GatewayClient's
    `strptime` would fail on either.
    """
    return value.astimezone(UTC).strftime(JUPYTER_FORMAT)


def parse_timestamp(value: str) -> datetime:
    """Parse ISO-8601, also jupyter_events' `+00:00Z` form, into an aware UTC datetime."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1]
        if not _OFFSET.search(text):
            text += "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
