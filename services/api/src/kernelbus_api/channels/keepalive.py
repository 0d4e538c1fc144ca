"""Websocket transport options for uvicorn: pings, frame size, compression (ADR 0003).

uvicorn's `websockets-sansio` implementation (`WebsocketProtocol`) does the pinging (and
answers client pings): every `ws_ping_interval` seconds, closing when no pong came within
max(3 x interval, 30 s).
Not the legacy `websockets` one: a client ping answered while a large frame was still being
sent made it close the socket with 1011 (two waiters on one transport drain; ADR 0015).
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from kernelbus_api.settings import ApiSettings

log = logging.getLogger(__name__)


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
        "ws": WebsocketProtocol,
        "ws_ping_interval": interval or None,
        "ws_ping_timeout": ping_timeout(interval) if interval else None,
        "ws_max_size": 2 * settings.ws_max_message_bytes,
        "ws_per_message_deflate": False,
    }


class WebsocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websocket, answering a client's text frame that is not UTF-8 with
    close code 1007 and one warning line. uvicorn 0.54 logs a traceback for it, and when the
    connection is already closing raises InvalidState out of `data_received` (found by
    tests/integration/test_fuzz_websocket.py)."""

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not _is_utf8(self.frames):
            self.frames = []
            if self.conn.state is State.OPEN:
                log.warning("closed a websocket with 1007: its text frame was not UTF-8")
                self.conn.send_close(1007)
                self.handle_parser_exception()
            return
        super().send_receive_event_to_app()


def _is_utf8(parts: list[bytes]) -> bool:
    try:
        (parts[0] if len(parts) == 1 else b"".join(parts)).decode()
    except UnicodeDecodeError:
        return False
    return True
