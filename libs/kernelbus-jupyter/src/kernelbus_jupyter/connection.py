"""A gateway-mode kernel websocket relay that keeps binary frames binary.

Both sides speak the legacy (no subprotocol) Jupyter websocket protocol, as jupyter_server
negotiates for every gateway connection; a legacy message with buffers is one binary frame
(offsets table, JSON, buffers) and needs no conversion, only to stay binary end to end.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Any, cast

from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.gateway.gateway_client import GatewayClient
from jupyter_server.utils import url_path_join
from tornado import websocket
from tornado.concurrent import Future
from tornado.escape import url_escape
from tornado.httpclient import HTTPRequest
from tornado.ioloop import IOLoop
from traitlets import Int

Frame = str | bytes


class BinaryGatewayWebSocketConnection(GatewayWebSocketConnection):
    """Relays one browser kernel websocket to the gateway, text and binary frames alike."""

    max_message_size = Int(
        256 * 1024 * 1024,
        config=True,
        help="Largest frame, in bytes, accepted from the gateway (tornado's default is 10 MiB).",
    )
    max_held_frames = Int(
        10_000,
        config=True,
        help="Browser frames held while the gateway connection is (re)opening; beyond this "
        "many the oldest are dropped with a warning.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._held: deque[Frame] = deque()

    # --- the gateway side ----------------------------------------------------------------

    async def connect(self) -> None:
        """Open (or reopen) the websocket to the gateway; frames are read once it is up."""
        client = GatewayClient.instance()
        url = url_path_join(
            client.ws_url or "", client.kernels_endpoint, url_escape(self.kernel_id), "channels"
        )
        if self.session_id:
            url += f"?session_id={url_escape(self.session_id)}"
        self.ws = None
        self.log.info("Connecting to %s (binary frames relayed)", url)
        connection_args: dict[str, Any] = client.load_connection_args()  # type: ignore[no-untyped-call]
        request = HTTPRequest(url, **connection_args)
        future = cast(
            "Future[websocket.WebSocketClientConnection]",
            websocket.websocket_connect(request, max_message_size=self.max_message_size),
        )
        self.ws_future = future
        IOLoop.current().add_future(future, self._connection_done)

    def _connection_done(self, future: Future[websocket.WebSocketClientConnection]) -> None:
        error = future.exception()
        if error is not None:
            self.log.warning(
                "Kernel %s: gateway websocket failed to open: %s: %s",
                self.kernel_id,
                type(error).__name__,
                error,
            )
            if not self.disconnected:
                IOLoop.current().spawn_callback(self._reconnect)
            return
        ws = future.result()
        if self.disconnected:  # the browser left while we were connecting
            ws.close()
            return
        self.ws = ws
        self.retry = 0
        while self._held and self.ws is not None:
            self._send(self._held.popleft())
        IOLoop.current().spawn_callback(self._read_messages)

    async def _read_messages(self) -> None:
        """Pass every gateway frame to the browser unchanged until the socket closes."""
        ws = self.ws
        while ws is not None and not self.disconnected:
            try:
                frame = await ws.read_message()
            except Exception as exc:
                self.log.error(
                    "Kernel %s: reading from the gateway failed: %s: %s",
                    self.kernel_id,
                    type(exc).__name__,
                    exc,
                )
                frame = None
            if frame is None:
                break
            self.handle_outgoing_message(frame)
        if self.ws is ws:
            self.ws = None
        if not self.disconnected:
            self.log.warning("Lost connection to the gateway: kernel %s", self.kernel_id)
            await self._reconnect()

    async def _reconnect(self) -> None:
        """Reconnect with jupyter_server's GatewayClient retry policy (exponential + jitter);
        once it is exhausted, close the browser's socket so that the client reconnects."""
        client = GatewayClient.instance()
        if self.retry >= client.gateway_retry_max:
            self.log.error(
                "Kernel %s: giving up on the gateway after %d retries", self.kernel_id, self.retry
            )
            self.websocket_handler.close(1011, "lost the connection to the gateway")
            return
        delay = min(
            client.gateway_retry_interval * (2**self.retry), client.gateway_retry_interval_max
        )
        delay += random.uniform(0.1, 1.0)  # jitter, not cryptography
        self.retry += 1
        self.log.info(
            "Kernel %s: reconnecting to the gateway in %.1f s (%d/%d)",
            self.kernel_id,
            delay,
            self.retry,
            client.gateway_retry_max,
        )
        await asyncio.sleep(delay)
        if not self.disconnected:
            await self.connect()

    # jupyter_server's handler calls disconnect() from on_close without awaiting it, as the stock
    # gateway relay (a plain method) expects; the base class declares it a coroutine.
    def disconnect(self) -> None:  # type: ignore[override]
        """The browser closed its socket: close ours (or abandon the one being opened)."""
        self.disconnected = True
        self._held.clear()
        if self.ws is not None:
            self.ws.close()
        elif self.ws_future is not None and not self.ws_future.done():
            self.ws_future.cancel()

    # --- the browser side ----------------------------------------------------------------

    def handle_outgoing_message(self, incoming_msg: Frame, *args: Any) -> None:
        """A gateway frame to the browser: binary frames stay binary."""
        try:
            self.websocket_handler.write_message(
                incoming_msg, binary=isinstance(incoming_msg, bytes)
            )
        except websocket.WebSocketClosedError:
            self.log.debug("Kernel %s: browser socket closed, frame dropped", self.kernel_id)

    def handle_incoming_message(self, message: Frame) -> None:
        """A browser frame to the gateway; held while the gateway socket is not open."""
        if self.disconnected:
            return
        if self.ws is None:
            self._hold(message)
        else:
            self._send(message)

    def _hold(self, message: Frame) -> None:
        if len(self._held) >= self.max_held_frames:
            self._held.popleft()
            self.log.warning(
                "Kernel %s: more than %d frames held while reconnecting; dropped the oldest",
                self.kernel_id,
                self.max_held_frames,
            )
        self._held.append(message)

    def _send(self, message: Frame) -> None:
        ws = self.ws
        assert ws is not None
        try:
            ws.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            # The read loop sees the close and reconnects; this frame goes out then.
            self.ws = None
            self._hold(message)
