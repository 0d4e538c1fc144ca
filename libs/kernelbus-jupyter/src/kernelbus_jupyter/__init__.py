"""Kernelbus on the client side: jupyter_server's gateway mode with binary frames.

jupyter_server's stock relay (`GatewayWebSocketConnection`) decodes every frame from the
gateway as UTF-8 text, so the first kernel message with binary buffers (ipywidgets' `Image`,
any comm message with `buffers`) ends its read loop and the notebook hangs. This relay passes
frames through as they are, text as text and binary as binary, in both directions, and holds
the browser's frames while it (re)connects to the gateway instead of dropping them.

Use it with `jupyter lab --gateway-url=...
--ServerApp.kernel_websocket_connection_class=kernelbus_jupyter.BinaryGatewayWebSocketConnection`.
"""

from __future__ import annotations

from kernelbus_jupyter.connection import BinaryGatewayWebSocketConnection

__all__ = ["BinaryGatewayWebSocketConnection"]
