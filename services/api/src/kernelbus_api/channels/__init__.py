"""The kernel websocket `WS /api/kernels/{id}/channels`, bridged to the bus (ADR 0003)."""

from kernelbus_api.channels.route import router

__all__ = ["router"]
