"""Checks made before the websocket upgrade, answered with real HTTP statuses.

Order as jupyter_server: authenticate (401), origin (403), kernel lookup (404), a kernel that
died with a reason (500). A kernel that is being restarted automatically is waited for (at
most `kernel_info_timeout`), as jupyter_server waits for its kernel's `ready`: a client that
reconnects at once after a crash then learns whether the restart worked.
Subprotocol and session_id rules are PROTOCOLS §2.1.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable

from starlette.responses import PlainTextResponse, Response
from starlette.websockets import WebSocket

from kernelbus import subjects
from kernelbus.errors import KernelbusError
from kernelbus.framing import V1_PROTOCOL
from kernelbus.models import KernelRecord
from kernelbus_api.auth import token_ok
from kernelbus_api.errors import error_response, status_for
from kernelbus_api.origin import origin_allowed, request_host
from kernelbus_api.state import AppState

log = logging.getLogger(__name__)


def denial_for_error(exc: KernelbusError) -> Response:
    """A failed attach, with the status the api maps the error's code to."""
    return error_response(status_for(exc), exc.message or exc.code)


async def check(websocket: WebSocket, state: AppState, kernel_id: str) -> Response | None:
    """The HTTP response that refuses this upgrade, or None to go ahead."""
    query = websocket.query_params
    if not token_ok(state.settings, websocket.headers.get("authorization"), query.get("token")):
        return error_response(401, "Unauthorized: invalid or missing token")
    peer = websocket.client.host if websocket.client else None
    host = request_host(state.settings, websocket.headers, peer)
    if not origin_allowed(state.settings, websocket.headers.get("origin"), host):
        return PlainTextResponse("Cross origin websockets not allowed", status_code=403)
    try:
        subjects.kernel_iopub(kernel_id)
    except ValueError:
        return error_response(404, f"Kernel does not exist: {kernel_id}")
    if not state.connectivity.connected:
        return error_response(503, state.connectivity.reason())
    try:
        record = await state.kernels.find(kernel_id)  # this replica's own start first
        if record is not None and record.execution_state == "restarting":
            record = await _after_restart(state, kernel_id, record)
    except KernelbusError as exc:
        return error_response(status_for(exc), exc.message)
    if record is None:
        return error_response(404, f"Kernel does not exist: {kernel_id}")
    if record.execution_state == "dead" and record.reason:
        return error_response(500, f"Kernel {kernel_id} is dead", record.reason)
    return None


async def _after_restart(
    state: AppState, kernel_id: str, record: KernelRecord
) -> KernelRecord | None:
    """The kernel's record once it is no longer `restarting` (or the wait is over)."""
    deadline = time.monotonic() + state.settings.kernel_info_timeout
    current: KernelRecord | None = record
    log.info("kernel %s is restarting; the websocket waits for it", kernel_id)
    while current is not None and current.execution_state == "restarting":
        if time.monotonic() >= deadline:
            log.warning("kernel %s still restarting; connecting anyway", kernel_id)
            break
        await asyncio.sleep(RESTART_POLL)
        current = await state.kernels.find(kernel_id)
    return current


RESTART_POLL = 0.1  # seconds between registry reads while a kernel restarts


def select_subprotocol(offered: Iterable[str], forced: str | None) -> str | None:
    """v1 iff the client offered it (never a protocol it did not offer); `forced=""`: legacy."""
    if forced is not None and forced != V1_PROTOCOL:
        return None
    return V1_PROTOCOL if V1_PROTOCOL in offered else None


def offered_subprotocols(websocket: WebSocket) -> list[str]:
    raw = websocket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def session_id_of(websocket: WebSocket, kernel_id: str) -> str:
    session_id = websocket.query_params.get("session_id", "")
    if not session_id:
        log.warning("no session_id on a websocket to kernel %s: using a random one", kernel_id)
        return uuid.uuid4().hex
    return session_id[:256]
