"""The frames of a Jupyter message as it comes off a kernel's ZMQ socket: routing identities
(or a topic), the delimiter, the signature, then the message's parts. Shared by the worker's
bridge and the iopub keeper, which imports nothing heavier.

Receiving and sending take ints, not pyzmq's flag enums: its `recv_multipart` reads RCVMORE
with a getsockopt per frame and its `send_multipart` ORs enum flags per frame, each building
an enum member in Python (78 per round trip in the worker, ADR 0028); a frame's own `more`
says the same for free.
"""

from __future__ import annotations

from collections.abc import Sequence

import zmq

DELIMITER = b"<IDS|MSG>"
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)
POLLOUT = int(zmq.POLLOUT)
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)


def message_parts(frames: list[bytes]) -> list[bytes] | None:
    """`[header, parent_header, metadata, content, *buffers]`, or None for frames that are not
    a Jupyter message (no delimiter, or fewer than four parts after the signature)."""
    try:
        at = frames.index(DELIMITER)
    except ValueError:
        return None
    parts = frames[at + 2 :]
    return parts if len(parts) >= 4 else None


def recv_frames(sock: zmq.Socket[bytes]) -> list[bytes]:
    """The multipart message waiting on `sock`, without blocking (zmq.Again if none: ZMQ
    hands over a message's parts together, so never half of one)."""
    frames = []
    while True:
        frame = sock.recv(_NOBLOCK, copy=False)
        frames.append(frame.bytes)
        if not frame.more:
            return frames


def send_frames(sock: zmq.Socket[bytes], frames: Sequence[bytes]) -> None:
    """Send a multipart message without blocking; zmq.Again (nothing sent) if the socket
    takes no message now: once ZMQ took the first part, it takes the rest."""
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        sock.send(frame, _MORE if index < last else _NOBLOCK, copy=False)
