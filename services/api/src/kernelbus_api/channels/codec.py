"""Websocket frames <-> bus frames for one connection's protocol (v1 or legacy JSON).

The bus carries v1 frames, so a v1 client's frames pass through byte for byte after a
validity check; only legacy clients cost a conversion.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from kernelbus import fastjson
from kernelbus.framing import (
    FrameError,
    header_of,
    legacy_to_v1,
    message_frame,
    pack_v1,
    unpack_v1,
    v1_to_legacy,
)


class FrameTooLarge(FrameError):
    """A client frame over `ws_max_message_bytes`: the connection is closed with 1009."""


def parse_client_frame(data: str | bytes, v1: bool, max_bytes: int) -> tuple[bytes, dict[str, Any]]:
    """The bus frame of a client frame and its parsed header; `FrameError` if unusable.

    A v1 client's frame, once checked, is the bus frame itself: it goes on unchanged.
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode())
    if size > max_bytes:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {max_bytes}")
    if v1:
        if not isinstance(data, bytes):
            raise FrameError("v1 protocol frames must be binary")
        _, parts = unpack_v1(data)
        frame = data
    else:
        channel, parts = legacy_to_v1(data)
        frame = pack_v1(channel, parts)
    try:
        header = header_of(parts)
    except ValueError as exc:
        raise FrameError("header is not JSON") from exc
    if not isinstance(header.get("msg_type"), str) or not isinstance(header.get("msg_id"), str):
        raise FrameError("header has no msg_type or msg_id")
    return frame, header


def client_frame(channel: str, parts: list[bytes], bus_frame: bytes, v1: bool) -> str | bytes:
    """The websocket frame a client of the given protocol receives for one bus message."""
    if v1:
        return bus_frame
    return v1_to_legacy(channel, parts)


def final_dead_status(channel: str, msg_type: object, parts: list[bytes]) -> bool:
    """The worker's last word on a kernel: iopub `status dead` with an empty parent."""
    if channel != "iopub" or msg_type != "status":
        return False
    return execution_state(parts) == "dead" and not _json_obj(parts[1])


def execution_state(parts: list[bytes]) -> str | None:
    state = _json_obj(parts[3]).get("execution_state")
    return state if isinstance(state, str) else None


def _json_obj(raw: bytes) -> dict[str, Any]:
    try:
        value = fastjson.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def parent_of(parts: list[bytes]) -> dict[str, Any]:
    return _json_obj(parts[1])


def stderr_notice(text: str, parent_header: dict[str, Any], session: str) -> bytes:
    """An iopub `stream` stderr message, as jupyter_server's `write_stderr` builds it."""
    return message_frame(
        "iopub",
        "stream",
        {"text": text + "\n", "name": "stderr"},
        session=session,
        parent_header=parent_header,
        msg_id=f"{session}_{os.getpid()}_{uuid.uuid4().hex[:8]}",
    )


def without_buffers(parts: list[bytes]) -> list[bytes]:
    """The four JSON parts only: a legacy client then gets a text frame."""
    return parts[:4]


def hide_traceback(parts: list[bytes], replacement: str) -> list[bytes]:
    """An iopub `error` as jupyter_server sends it with `allow_tracebacks=False`."""
    content = {"ename": "ExecutionError", "evalue": "Execution error", "traceback": [replacement]}
    return [*parts[:3], json.dumps(content).encode(), *parts[4:]]
