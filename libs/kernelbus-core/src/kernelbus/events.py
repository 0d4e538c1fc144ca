"""Kernelbus's events as a contract: the schema ids, the headers an event travels with, and the
`kernel_actions` payload worded as jupyter_server words it.

Publishing them into the `KERNELBUS_EVENTS` JetStream stream is runtime work:
`kernelbus.eventpublisher` (in `kernelbus-runtime`).
"""

from __future__ import annotations

from typing import Any

_JS = "https://events.jupyter.org/jupyter_server"
_KB = "https://events.kernelbus.io/kernelbus"

KERNEL_ACTIONS = f"{_JS}/kernel_actions/v1"
GATEWAY_CLIENT = f"{_JS}/gateway_client/v1"
CONTENTS_SERVICE = f"{_JS}/contents_service/v1"
"""Not emitted by Kernelbus; accepted so forwarded jupyter_server events are not refused."""
KERNEL_ACTIVITY = f"{_KB}/kernel_activity/v1"
KERNEL_CULLED = f"{_KB}/kernel_culled/v1"
KERNEL_DIED = f"{_KB}/kernel_died/v1"
WORKER_STARTED = f"{_KB}/worker_started/v1"
WORKER_STOPPED = f"{_KB}/worker_stopped/v1"
WORKER_LOST = f"{_KB}/worker_lost/v1"
SERVICE_RESTARTED = f"{_KB}/service_restarted/v1"
"""Emitted by the embedded launcher when it restarts a process that died."""

EVENT_ID_HEADER = "Kb-Event-Id"
SOURCE_HEADER = "Kb-Source"
MSG_ID_HEADER = "Nats-Msg-Id"


_PAST = {"start": "started", "interrupt": "interrupted", "restart": "restarted"}


def kernel_action(
    action: str,
    kernel_id: str | None,
    kernel_name: str | None,
    error: BaseException | str | None = None,
    *,
    status_code: int | None = None,
) -> dict[str, Any]:
    """A `kernel_actions` payload worded exactly as jupyter_server words it: success with
    "Kernel <id> was <past tense>." (`shutdown` stays `shutdown`), or error with the message
    (an exception's text, else its type; an empty message: "Kernel <action> failed").

    A failed request may not know its kernel (id or name): absent ones are left out.
    `status_code`: the HTTP status the client got, for an error answered over REST.
    """
    data: dict[str, Any] = {"action": action}
    if kernel_id:
        data["kernel_id"] = kernel_id
    if kernel_name:
        data["kernel_name"] = kernel_name
    if error is None:
        data.update(status="success", msg=f"Kernel {kernel_id} was {_PAST.get(action, action)}.")
        return data
    if isinstance(error, BaseException):
        error = str(error) or type(error).__name__
    data["status"] = "error"
    if status_code is not None:
        data["status_code"] = status_code
    data["msg"] = error or f"Kernel {action} failed"
    return data
