"""The v1 bus frame and the legacy binary frame: every offset check refuses what it guards."""

from __future__ import annotations

import json
import struct

import pytest

from kernelbus.framing import (
    FrameError,
    legacy_to_v1,
    pack_v1,
    parent_msg_id,
    unpack_v1,
    v1_to_legacy,
)

PARTS = [b'{"msg_id":"m1","msg_type":"x"}', b'{"msg_id":"p1"}', b"{}", b'{"a":1}']


def frame_with(n: int, offsets: list[int], body: bytes) -> bytes:
    """A v1 frame with a hand-written part count and offset table (no consistency)."""
    return struct.pack(f"<{len(offsets) + 1}Q", n, *offsets) + body


def good() -> bytes:
    return pack_v1("shell", [*PARTS, b"\x00buf"])


def test_pack_then_unpack_is_the_identity() -> None:
    channel, parts = unpack_v1(good())
    assert channel == "shell"
    assert parts == [*PARTS, b"\x00buf"]


def test_offsets_point_at_each_part() -> None:
    frame = pack_v1("iopub", PARTS)
    n = struct.unpack_from("<Q", frame)[0]
    offsets = struct.unpack_from(f"<{n}Q", frame, 8)
    assert n == len(PARTS) + 2
    assert offsets[0] == 8 * (n + 1)
    assert frame[offsets[0] : offsets[1]] == b"iopub"
    assert frame[offsets[1] : offsets[2]] == PARTS[0]
    assert offsets[-1] == len(frame)


@pytest.mark.parametrize("frame", [b"", b"\x06\x00\x00"], ids=["empty", "short-header"])
def test_a_frame_shorter_than_its_header_is_refused(frame: bytes) -> None:
    with pytest.raises(FrameError, match="shorter"):
        unpack_v1(frame)


def test_fewer_than_six_offsets_is_refused() -> None:
    # five offsets: channel + 3 parts cannot hold header, parent, metadata and content
    frame = pack_v1("shell", PARTS[:3])
    with pytest.raises(FrameError, match="part count"):
        unpack_v1(frame)


def test_a_part_count_larger_than_the_frame_is_refused() -> None:
    frame = good()
    huge = struct.pack("<Q", 10_000) + frame[8:]
    with pytest.raises(FrameError, match="part count"):
        unpack_v1(huge)


def test_a_first_offset_not_right_after_the_table_is_refused() -> None:
    frame = bytearray(good())
    n = struct.unpack_from("<Q", frame)[0]
    struct.pack_into("<Q", frame, 8, 8 * (n + 1) + 1)
    with pytest.raises(FrameError, match="do not match"):
        unpack_v1(bytes(frame))


def test_a_last_offset_short_of_the_frame_end_is_refused() -> None:
    with pytest.raises(FrameError, match="do not match"):
        unpack_v1(good() + b"trailing")


def test_decreasing_offsets_are_refused() -> None:
    n = 6
    start = 8 * (n + 1)
    body = b"shell" + b"x" * 20
    end = start + len(body)
    offsets = [start, start + 5, start + 15, start + 10, start + 18, end]
    with pytest.raises(FrameError, match="not increasing"):
        unpack_v1(frame_with(n, offsets, body))


def test_an_unknown_channel_is_refused() -> None:
    with pytest.raises(FrameError, match="unknown channel"):
        unpack_v1(pack_v1("nope", PARTS))


def test_parent_msg_id_is_the_routing_key_or_none() -> None:
    assert parent_msg_id(PARTS) == "p1"
    assert parent_msg_id([PARTS[0], b"{}"]) is None
    assert parent_msg_id([PARTS[0], b"not json"]) is None
    assert parent_msg_id([PARTS[0], b"[1]"]) is None


def test_legacy_binary_round_trip_keeps_buffers() -> None:
    frame = v1_to_legacy("iopub", [*PARTS, b"one", b"two"])
    assert isinstance(frame, bytes)
    channel, parts = legacy_to_v1(frame)
    assert channel == "iopub"
    assert parts[4:] == [b"one", b"two"]
    assert json.loads(parts[3]) == {"a": 1}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x00\x00\x00\x01", "shorter"),
        (struct.pack(">I", 0) + b"\x00" * 8, "part count"),
        (struct.pack(">I", 100) + b"\x00" * 8, "part count"),
        (struct.pack(">2I", 1, 9) + b"{}", "bad offsets"),
        (struct.pack(">3I", 2, 12, 11) + b"{}xx", "bad offsets"),
    ],
    ids=["short", "zero-parts", "too-many-parts", "first-offset", "decreasing"],
)
def test_bad_legacy_binary_frames_are_refused(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        legacy_to_v1(frame)


def legacy_reference(channel: str, parts: list[bytes]) -> dict[str, object]:
    """What a legacy client must read: the parts decoded, in jupyter_server's shape."""
    header = json.loads(parts[0])
    return {
        "header": header,
        "msg_id": header["msg_id"],
        "msg_type": header["msg_type"],
        "parent_header": json.loads(parts[1]),
        "metadata": json.loads(parts[2]),
        "content": json.loads(parts[3]),
        "channel": channel,
        "buffers": [],
    }


@pytest.mark.parametrize(
    "content",
    [
        b'{"a":1}',
        b'{"data": {"text/plain": "caf\xc3\xa9 \\u00e9 \\"q\\" \\n"}, "metadata": {}}',
        b' {"x": [1, 2.5, null, true, {"y": "}"}]}\n',
        json.dumps({"data": {"text/plain": "x" * 100_000}}).encode(),
    ],
    ids=["small", "unicode-and-escapes", "whitespace-around", "large"],
)
def test_legacy_text_is_the_parts_spliced_unchanged(content: bytes) -> None:
    parts = [*PARTS[:3], content]
    text = v1_to_legacy("iopub", parts)
    assert isinstance(text, str)
    assert json.loads(text) == legacy_reference("iopub", parts)
    assert content.decode() in text  # passed through, not re-encoded


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ([b"not json", *PARTS[1:]], "Expecting value"),
        ([b"[1]", *PARTS[1:]], "header is not an object"),
        ([PARTS[0], b"[]", *PARTS[2:]], "not a JSON object"),
        ([*PARTS[:3], b'"text"'], "not a JSON object"),
        ([*PARTS[:3], b"{"], "not a JSON object"),
        ([*PARTS[:3], b'{"a": "\xff"}'], "not UTF-8"),
        (PARTS[:3], "fewer than four"),
    ],
    ids=[
        "header-not-json",
        "header-array",
        "parent-array",
        "content-string",
        "truncated",
        "not-utf8",
        "three-parts",
    ],
)
def test_legacy_conversion_refuses_what_is_not_a_message(parts: list[bytes], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        v1_to_legacy("iopub", parts)
