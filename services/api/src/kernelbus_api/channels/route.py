"""`WS /api/kernels/{kernel_id}/channels`: the Jupyter kernel websocket over the bus."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter
from starlette.responses import Response
from starlette.websockets import WebSocket

from kernelbus.errors import KernelbusError
from kernelbus_api.channels import handshake
from kernelbus_api.channels.connection import Connection
from kernelbus_api.channels.hub import hub_of
from kernelbus_api.channels.ratelimit import IOPubRateLimiter, RateLimits
from kernelbus_api.errors import error_response
from kernelbus_api.settings import ApiSettings
from kernelbus_api.state import AppState

router = APIRouter()

PATH = "/api/kernels/{kernel_id}/channels"


@router.websocket(PATH)
async def kernel_channels(websocket: WebSocket, kernel_id: str) -> None:
    """Relay a kernel's channels: v1.kernel.websocket.jupyter.org if offered, else legacy."""
    state = cast(AppState, websocket.app.state.kb)
    denial = await handshake.check(websocket, state, kernel_id)
    if denial is not None:
        await websocket.send_denial_response(denial)
        return
    subprotocol = handshake.select_subprotocol(
        handshake.offered_subprotocols(websocket), state.settings.kernel_ws_protocol
    )
    conn = _connection(websocket, state.settings, kernel_id, v1=subprotocol is not None)
    hub = hub_of(websocket.app)
    try:
        await hub.open(conn)
    except KernelbusError as exc:
        await websocket.send_denial_response(handshake.denial_for_error(exc))
        return
    try:
        await websocket.accept(subprotocol=subprotocol)
        await conn.run(lambda frame: hub.publish(conn, frame))
    finally:
        await hub.close(conn)


@router.get(PATH, include_in_schema=False)
async def kernel_channels_without_upgrade(kernel_id: str) -> Response:
    """A plain GET on the websocket path: 400, as jupyter_server answers."""
    return error_response(400, 'Can "Upgrade" only to "WebSocket".')


def _connection(
    websocket: WebSocket, settings: ApiSettings, kernel_id: str, v1: bool
) -> Connection:
    limiter = None
    if settings.limit_rate:
        limits = RateLimits(
            settings.iopub_msg_rate_limit,
            settings.iopub_data_rate_limit,
            settings.rate_limit_window,
        )
        limiter = IOPubRateLimiter(limits)
    return Connection(
        kernel_id=kernel_id,
        session_id=handshake.session_id_of(websocket, kernel_id),
        websocket=websocket,
        v1=v1,
        max_bytes=settings.ws_max_message_bytes,
        limiter=limiter,
        allowed_types=allowed_types(settings),
        strip_buffers=not v1 and settings.drop_buffers_for_tornado_clients and _tornado(websocket),
        traceback_replacement=(
            None if settings.allow_tracebacks else settings.traceback_replacement_message
        ),
    )


def _tornado(websocket: WebSocket) -> bool:
    """jupyter_server's relay identifies itself only by Tornado's User-Agent (a weak signal)."""
    return websocket.headers.get("user-agent", "").startswith("Tornado/")


def allowed_types(settings: ApiSettings) -> frozenset[str]:
    """`KERNELBUS_ALLOWED_MESSAGE_TYPES` as a set; empty means every type is forwarded."""
    return settings.allowed_message_type_set
