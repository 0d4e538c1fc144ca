"""The iopub keeper's ring (ADR 0014): what a successor fetches after a worker crash."""

from __future__ import annotations

import json

import zmq

from kernelbus_worker.keeper import Watched


def _parts(msg_id: str) -> list[bytes]:
    return [json.dumps({"msg_id": msg_id}).encode(), b"{}", b"{}", b"{}"]


def test_the_ring_answers_what_came_after_the_acked_message() -> None:
    ring = Watched("k", "tcp://127.0.0.1:1", None, None, window=10, max_bytes=1000)  # type: ignore[arg-type]
    for n, msg_id in enumerate("abcd"):
        ring.add(msg_id, _parts(msg_id), now=float(n))
    assert [p[0] for p in ring.after_ack()] == [_parts(m)[0] for m in "abcd"]
    ring.acked = "b"
    assert [p[0] for p in ring.after_ack()] == [_parts(m)[0] for m in "cd"]
    ring.acked = "gone"  # evicted or never seen: everything kept (the api drops what it sent)
    assert len(ring.after_ack()) == 4
    ring.add("e", _parts("e"), now=12.5)  # a, b and c are older than the 10 s window
    assert [p[0] for p in ring.after_ack()] == [_parts(m)[0] for m in "de"]


def test_msg_ids_read_from_headers_only_when_a_fetch_needs_them() -> None:
    ring = Watched("k", "tcp://127.0.0.1:1", None, None, 10.0, 1 << 20)  # type: ignore[arg-type]
    for n, msg_id in enumerate("abc"):
        ring.add(None, _parts(msg_id), now=float(n))
    ring.acked = "b"
    assert [p[0] for p in ring.after_ack()] == [_parts("c")[0]]


def test_a_forgotten_kernels_ring_is_emptied_at_once() -> None:
    """Its task and it refer to each other: without this the frames would wait for a
    garbage collection (a keeper grew by ~57 MiB per deleted kernel that printed 20 MB)."""
    context = zmq.Context()
    try:
        sock = context.socket(zmq.SUB)
        ring = Watched("k", "tcp://127.0.0.1:1", None, sock, 10.0, 1 << 20)  # type: ignore[arg-type]
        ring.add("a", _parts("a"), now=0.0)
        ring.close()
        assert not ring.ring and ring.size == 0
    finally:
        context.term()
