"""Jupyter websocket framings, and the bus framing that reuses one of them.

The bus carries each Jupyter message as one `v1.kernel.websocket.jupyter.org` frame
(channel + header, parent_header, metadata, content, buffers): a v1 client gets the bytes as
they are; only legacy-JSON clients cost a conversion (`v1_to_legacy` / `legacy_to_v1`).
"""

from __future__ import annotations

import itertools
import json
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

from kernelbus import fastjson

CHANNELS = frozenset({"shell", "iopub", "control", "stdin"})
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
PROTOCOL_VERSION = "5.4"
"""The Jupyter messaging protocol version of the messages Kernelbus writes itself (the one
jupyter_client's `Session` writes in the worker; a unit test keeps the two equal)."""


class FrameError(ValueError):
    """A websocket frame or bus message that is not a well-formed Jupyter message."""


# --- v1 -----------------------------------------------------------------------------------


def pack_v1(channel: str, parts: list[bytes]) -> bytes:
    """`[n][offsets...][channel][header][parent][metadata][content][buffers...]`, u64 LE."""
    n = len(parts) + 2
    offsets = [8 * (n + 1)]
    offsets.append(offsets[0] + len(channel))
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = struct.pack(f"<{n + 1}Q", n, *offsets)
    return b"".join([head, channel.encode(), *parts])


def unpack_v1(frame: bytes) -> tuple[str, list[bytes]]:
    """Split a v1 frame into its channel and parts, refusing anything malformed."""
    if len(frame) < 8:
        raise FrameError("frame shorter than its header")
    (n,) = struct.unpack_from("<Q", frame, 0)
    if n < 6 or 8 * (n + 1) > len(frame):
        raise FrameError("bad part count")
    offsets = struct.unpack_from(f"<{n}Q", frame, 8)
    if offsets[0] != 8 * (n + 1) or offsets[-1] != len(frame):
        raise FrameError("offsets do not match the frame")
    if any(b < a for a, b in itertools.pairwise(offsets)):
        raise FrameError("offsets are not increasing")
    channel = frame[offsets[0] : offsets[1]].decode("ascii", "replace")
    if channel not in CHANNELS:
        raise FrameError(f"unknown channel {channel!r}")
    parts = [frame[a:b] for a, b in itertools.pairwise(offsets[1:])]
    return channel, parts


def message_frame(
    channel: str,
    msg_type: str,
    content: dict[str, Any],
    *,
    session: str,
    parent_header: dict[str, Any] | None = None,
    msg_id: str | None = None,
) -> bytes:
    """A Jupyter message Kernelbus writes itself (not a kernel's), as one bus frame.

    The one place such headers are built: username `kernelbus`, an ISO date with a `Z`, and
    `PROTOCOL_VERSION`. The worker's kernel-facing messages go through jupyter_client's
    `Session` instead, which signs them for the kernel.
    """
    header = {
        "msg_id": msg_id or uuid.uuid4().hex,
        "msg_type": msg_type,
        "username": "kernelbus",
        "session": session,
        "date": iso_date(datetime.now(UTC)),
        "version": PROTOCOL_VERSION,
    }
    parts = [header, parent_header or {}, {}, content]
    return pack_v1(channel, [json.dumps(part).encode() for part in parts])


# --- legacy (JSON text, or the binary framing for messages with buffers) -------------------


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_date(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def iso_date(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def v1_to_legacy(channel: str, parts: list[bytes]) -> str | bytes:
    """A bus message as the legacy protocol sends it: JSON text, or binary with buffers.

    The JSON parts are spliced in as the kernel wrote them, not decoded and re-encoded: a
    20 MB `display_data` costs a copy instead of two passes of the json module (ADR 0015).
    The header is parsed (its `msg_id` and `msg_type` are repeated at the top level); the
    other parts are checked to be JSON objects by their first and last bytes, and the text
    to be UTF-8, as much as the v1 protocol's byte-for-byte relay checks."""
    if len(parts) < 4:
        raise FrameError("fewer than four message parts")
    header = header_of(parts)
    for part in parts[1:4]:
        _check_object(part)
    msg_id = header.get("msg_id", "")
    msg_type = header.get("msg_type", "")
    buffers = parts[4:]
    pieces = [
        b'{"header": ',
        parts[0],
        b', "msg_id": ',
        json.dumps(msg_id).encode(),
        b', "msg_type": ',
        json.dumps(msg_type).encode(),
        b', "parent_header": ',
        parts[1],
        b', "metadata": ',
        parts[2],
        b', "content": ',
        parts[3],
        b', "channel": ',
        json.dumps(channel).encode(),
    ]
    if not buffers:
        pieces.append(b', "buffers": []}')
        try:
            return b"".join(pieces).decode()
        except UnicodeDecodeError as exc:
            raise FrameError("message parts are not UTF-8") from exc
    pieces.append(b"}")
    body = b"".join(pieces)
    nparts = len(buffers) + 1
    offsets = [4 * (nparts + 1)]
    offsets.append(offsets[0] + len(body))
    for buf in buffers[:-1]:
        offsets.append(offsets[-1] + len(buf))
    return b"".join([struct.pack(f">{nparts + 1}I", nparts, *offsets), body, *buffers])


_WHITESPACE = b" \t\n\r"


def _check_object(part: bytes) -> None:
    """A JSON object by its outer bytes (the inside passes through as the kernel wrote it)."""
    start, end = 0, len(part)
    while start < end and part[start] in _WHITESPACE:
        start += 1
    while end > start and part[end - 1] in _WHITESPACE:
        end -= 1
    if end - start < 2 or part[start] != 0x7B or part[end - 1] != 0x7D:  # { ... }
        raise FrameError("a message part is not a JSON object")


def legacy_to_v1(data: str | bytes) -> tuple[str, list[bytes]]:
    """Parse a legacy client frame into channel and v1 parts.

    Accepts what real clients send: no `channel` (shell), epoch-number `header.date`, empty
    `session`. Raises `FrameError` for anything that is not a Jupyter message.
    """
    buffers: list[bytes] = []
    if isinstance(data, bytes):
        body, buffers = _split_legacy_binary(data)
    else:
        body = data.encode()
    try:
        msg = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FrameError("not JSON") from exc
    if not isinstance(msg, dict):
        raise FrameError("message is not a JSON object")
    header = msg.get("header")
    if not isinstance(header, dict) or not isinstance(header.get("msg_type"), str):
        raise FrameError("message has no header with a msg_type")
    if not isinstance(header.get("msg_id"), str):
        raise FrameError("message header has no msg_id")
    channel = msg.get("channel") or "shell"
    if channel not in CHANNELS:
        raise FrameError(f"unknown channel {channel!r}")
    date = header.get("date")
    if isinstance(date, int | float) and not isinstance(date, bool):
        header["date"] = iso_date(datetime.fromtimestamp(date, UTC))
    parts = [
        json.dumps(header).encode(),
        json.dumps(_obj(msg.get("parent_header"))).encode(),
        json.dumps(_obj(msg.get("metadata"))).encode(),
        json.dumps(_obj(msg.get("content"))).encode(),
        *buffers,
    ]
    return channel, parts


def _obj(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FrameError("parent_header, metadata and content must be objects")
    return value


def _split_legacy_binary(frame: bytes) -> tuple[bytes, list[bytes]]:
    if len(frame) < 8:
        raise FrameError("binary frame shorter than its header")
    (nparts,) = struct.unpack_from(">I", frame, 0)
    if nparts < 1 or 4 * (nparts + 1) > len(frame):
        raise FrameError("bad part count in binary frame")
    offsets = [*struct.unpack_from(f">{nparts}I", frame, 4), len(frame)]
    if offsets[0] != 4 * (nparts + 1) or any(b < a for a, b in itertools.pairwise(offsets)):
        raise FrameError("bad offsets in binary frame")
    pieces = [frame[a:b] for a, b in itertools.pairwise(offsets)]
    return pieces[0], pieces[1:]


def header_of(parts: list[bytes]) -> dict[str, Any]:
    value = fastjson.loads(parts[0])
    if not isinstance(value, dict):
        raise FrameError("header is not an object")
    return value


def parent_msg_id(parts: list[bytes]) -> str | None:
    """The `msg_id` of the request a kernel message answers (routing key)."""
    try:
        parent = fastjson.loads(parts[1])
    except ValueError:
        return None
    return parent.get("msg_id") if isinstance(parent, dict) else None
