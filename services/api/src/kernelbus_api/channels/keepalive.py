"""Websocket transport options for uvicorn: pings, frame size, compression (ADR 0003).

uvicorn's `websockets` implementation does the pinging (and answers client pings): every
`ws_ping_interval` seconds, closing when no pong came within max(3 x interval, 30 s).
"""

from __future__ import annotations

from typing import Any

from kernelbus_api.settings import ApiSettings


def ping_timeout(interval: float) -> float:
    return max(3 * interval, 30.0)


def uvicorn_ws_options(settings: ApiSettings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run`.

    Frames up to twice the limit reach the handler, which closes with 1009 and logs which
    kernel it was; larger ones are refused by the websockets library (also 1009) before
    being buffered. Compression is off, as jupyter_server's default: it costs latency on
    every small frame and CPU on large outputs.
    """
    interval = settings.ws_ping_interval
    return {
        "ws": "websockets",
        "ws_ping_interval": interval or None,
        "ws_ping_timeout": ping_timeout(interval) if interval else None,
        "ws_max_size": 2 * settings.ws_max_message_bytes,
        "ws_per_message_deflate": False,
    }
