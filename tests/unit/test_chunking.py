"""Chunked bus messages: split sizes, reassembly, and every way a chunk stream goes wrong."""

from __future__ import annotations

import pytest

from kernelbus.chunking import CHUNK_ID, CHUNK_POS, HEADROOM, Reassembler, split, split_views

MAX = 1024 + HEADROOM  # one chunk holds 1024 bytes


def chunks(payload: bytes) -> list[tuple[dict[str, str], bytes]]:
    return split(payload, MAX)


def test_a_message_that_fits_travels_whole_without_headers() -> None:
    assert split(b"x" * 1024, MAX) == [({}, b"x" * 1024)]


def test_a_large_message_is_split_in_order_under_one_id() -> None:
    payload = bytes(range(256)) * 10  # 2560 bytes: three chunks
    pieces = chunks(payload)
    assert [h[CHUNK_POS] for h, _ in pieces] == ["1/3", "2/3", "3/3"]
    assert len({h[CHUNK_ID] for h, _ in pieces}) == 1
    assert [len(d) for _, d in pieces] == [1024, 1024, 512]
    assert b"".join(d for _, d in pieces) == payload


def test_a_tiny_max_payload_still_makes_kilobyte_chunks() -> None:
    assert [len(d) for _, d in split(b"y" * 2048, 10)] == [1024, 1024]


def test_reassembly_returns_the_message_on_its_last_chunk_only() -> None:
    payload = b"z" * 3000
    r = Reassembler()
    results = [r.feed(h, d) for h, d in chunks(payload)]
    assert results[:-1] == [None, None]
    assert results[-1] == payload
    assert r._partials == {}


def test_unchunked_messages_pass_through() -> None:
    r = Reassembler()
    assert r.feed(None, b"whole") == b"whole"
    assert r.feed({"other": "header"}, b"whole") == b"whole"


def test_interleaved_messages_are_kept_apart() -> None:
    a, b = chunks(b"a" * 2000), chunks(b"b" * 2000)
    r = Reassembler()
    assert r.feed(*a[0]) is None
    assert r.feed(*b[0]) is None
    assert r.feed(*a[1]) == b"a" * 2000
    assert r.feed(*b[1]) == b"b" * 2000


@pytest.mark.parametrize("pos", ["", "1", "x/3", "1/y", "1/2/3"])
def test_a_malformed_position_is_dropped(pos: str) -> None:
    r = Reassembler()
    assert r.feed({CHUNK_ID: "c", CHUNK_POS: pos}, b"data") is None
    assert r._partials == {}


@pytest.mark.parametrize(
    "order",
    [(1, 2), (0, 2, 1), (0, 0)],
    ids=["not-starting-at-one", "gap-then-late-chunk", "repeated-chunk"],
)
def test_a_broken_chunk_stream_is_dropped_whole(order: tuple[int, ...]) -> None:
    r = Reassembler()
    pieces = chunks(b"q" * 3000)  # three chunks
    assert [r.feed(*pieces[i]) for i in order] == [None] * len(order)
    assert r._partials == {}


def test_a_zero_total_is_dropped() -> None:
    r = Reassembler()
    assert r.feed({CHUNK_ID: "c", CHUNK_POS: "1/0"}, b"data") is None
    assert r._partials == {}


def test_a_message_over_max_bytes_is_dropped() -> None:
    r = Reassembler(max_bytes=1500)
    pieces = chunks(b"m" * 3000)
    assert r.feed(*pieces[0]) is None
    assert r.feed(*pieces[1]) is None  # 2048 bytes > 1500: dropped
    assert r._partials == {}
    assert r.feed(*pieces[2]) is None


def test_an_incomplete_message_expires_after_max_age() -> None:
    r = Reassembler(max_age=60)
    stale, fresh = chunks(b"s" * 2000), chunks(b"f" * 2000)
    assert r.feed(*stale[0]) is None
    r._partials[stale[0][0][CHUNK_ID]].started -= 61  # begun 61 s ago
    assert r.feed(*fresh[0]) is None  # any feed sweeps expired partials
    assert set(r._partials) == {fresh[0][0][CHUNK_ID]}
    assert r.feed(*stale[1]) is None
    assert r.feed(*fresh[1]) == b"f" * 2000


def test_views_are_the_same_chunks_without_copies() -> None:
    payload = bytes(range(256)) * 10
    views = split_views(payload, MAX)
    assert [(h[CHUNK_POS], bytes(v)) for h, v in views] == [
        (h[CHUNK_POS], d) for h, d in split(payload, MAX)
    ]
    assert all(v.obj is payload for _, v in views)  # views into the frame, not copies
    r = Reassembler()
    assert [r.feed(h, bytes(v)) for h, v in views][-1] == payload
