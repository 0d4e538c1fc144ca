"""Carry Jupyter messages larger than NATS's `max_payload` as ordered chunks.

NATS keeps the order of one publisher's messages on one subject, so a receiver reassembles
by appending. Headers: `KB-Chunk-Id` (one id per message) and `KB-Chunk` (`i/n`, 1-based).
A message that fits travels whole, with no headers: the common case costs nothing.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

CHUNK_ID = "KB-Chunk-Id"
CHUNK_POS = "KB-Chunk"
HEADROOM = 4096
"""Bytes kept free below max_payload for headers (trace context, routing)."""


def split(payload: bytes, max_payload: int) -> list[tuple[dict[str, str], bytes]]:
    """The (headers, data) NATS messages that carry `payload`."""
    return [(headers, bytes(piece)) for headers, piece in split_views(payload, max_payload)]


def split_views(payload: bytes, max_payload: int) -> list[tuple[dict[str, str], memoryview]]:
    """`split` without copies: each chunk is a view of `payload` (the publisher's hot path;
    the NATS client copies each chunk into its publish command anyway)."""
    size = max(1024, max_payload - HEADROOM)
    view = memoryview(payload)
    if len(payload) <= size:
        return [({}, view)]
    chunk_id = uuid.uuid4().hex
    pieces = [view[i : i + size] for i in range(0, len(payload), size)]
    total = len(pieces)
    return [
        ({CHUNK_ID: chunk_id, CHUNK_POS: f"{i}/{total}"}, piece)
        for i, piece in enumerate(pieces, start=1)
    ]


@dataclass
class _Partial:
    total: int
    pieces: list[bytes] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


@dataclass
class Reassembler:
    """Rebuild chunked messages; incomplete ones are dropped after `max_age` seconds."""

    max_age: float = 60.0
    max_bytes: int = 512 * 1024 * 1024
    _partials: dict[str, _Partial] = field(default_factory=dict)

    def feed(self, headers: dict[str, str] | None, data: bytes) -> bytes | None:
        """The whole message once its last chunk arrived, else None."""
        if not headers or CHUNK_ID not in headers:
            return data
        chunk_id = headers[CHUNK_ID]
        try:
            index, total = (int(x) for x in headers.get(CHUNK_POS, "").split("/"))
        except ValueError:
            return None
        self._expire()
        partial = self._partials.get(chunk_id)
        if partial is None:
            if index != 1 or total < 1:
                return None
            partial = self._partials[chunk_id] = _Partial(total)
        if index != len(partial.pieces) + 1:
            self._partials.pop(chunk_id, None)
            return None
        partial.pieces.append(data)
        if sum(len(p) for p in partial.pieces) > self.max_bytes:
            self._partials.pop(chunk_id, None)
            return None
        if index == partial.total:
            del self._partials[chunk_id]
            return b"".join(partial.pieces)
        return None

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, p in self._partials.items() if now - p.started > self.max_age]:
            del self._partials[key]
