"""The frames of a Jupyter message as it comes off a kernel's ZMQ socket: routing identities
(or a topic), the delimiter, the signature, then the message's parts. Shared by the worker's
bridge and the iopub keeper, which imports nothing heavier."""

from __future__ import annotations

DELIMITER = b"<IDS|MSG>"


def message_parts(frames: list[bytes]) -> list[bytes] | None:
    """`[header, parent_header, metadata, content, *buffers]`, or None for frames that are not
    a Jupyter message (no delimiter, or fewer than four parts after the signature)."""
    try:
        at = frames.index(DELIMITER)
    except ValueError:
        return None
    parts = frames[at + 2 :]
    return parts if len(parts) >= 4 else None
