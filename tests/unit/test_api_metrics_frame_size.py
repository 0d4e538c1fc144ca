"""The api counts websocket bytes exactly, without encoding an ASCII text frame to count it."""

from __future__ import annotations

from kernelbus_api.metrics import _frame_size


def test_text_frames_count_their_utf8_bytes() -> None:
    assert _frame_size({"type": "websocket.send", "text": '{"a": "x"}'}) == 10
    assert _frame_size({"type": "websocket.send", "text": "é€"}) == len("é€".encode())


def test_binary_and_empty_frames() -> None:
    assert _frame_size({"type": "websocket.send", "bytes": b"\x00" * 7}) == 7
    assert _frame_size({"type": "websocket.send"}) == 0
