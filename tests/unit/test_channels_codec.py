"""Client frame parsing, bus-to-client encoding and the handshake's pure rules."""

from __future__ import annotations

import json
import struct

import pytest

from kernelbus.framing import V1_PROTOCOL, FrameError, pack_v1, unpack_v1
from kernelbus_api.channels import codec
from kernelbus_api.channels.handshake import select_subprotocol
from kernelbus_api.channels.keepalive import ping_timeout, uvicorn_ws_options
from kernelbus_api.settings import ApiSettings

HEADER = {"msg_id": "m1", "msg_type": "execute_request", "session": "", "version": "5.3"}


def legacy(**overrides: object) -> str:
    msg: dict[str, object] = {
        "header": HEADER,
        "parent_header": {},
        "metadata": {},
        "content": {"code": "1+1"},
        "channel": "shell",
    }
    msg.update(overrides)
    return json.dumps(msg)


def v1_parts(header: object = HEADER) -> list[bytes]:
    return [json.dumps(header).encode(), b"{}", b"{}", b'{"code":"1+1"}']


def test_legacy_frame_parses_to_v1_parts() -> None:
    frame, header = codec.parse_client_frame(legacy(), v1=False, max_bytes=10_000)
    channel, parts = unpack_v1(frame)
    assert channel == "shell"
    assert header["msg_type"] == "execute_request"
    assert json.loads(parts[3]) == {"code": "1+1"}


def test_legacy_frame_without_channel_goes_to_shell() -> None:
    msg = json.loads(legacy())
    del msg["channel"]
    frame, _ = codec.parse_client_frame(json.dumps(msg), v1=False, max_bytes=10_000)
    assert unpack_v1(frame)[0] == "shell"


def test_epoch_date_is_normalised_to_iso() -> None:
    frame = legacy(header={**HEADER, "date": 1795299625.926216})
    _, header = codec.parse_client_frame(frame, v1=False, max_bytes=10_000)
    assert header["date"].endswith("Z") and header["date"].startswith("2026-")


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        legacy(channel="nope"),
        legacy(header={"msg_type": "x"}),
        legacy(content=[1]),
    ],
)
def test_bad_legacy_frames_are_refused(frame: str) -> None:
    with pytest.raises(FrameError):
        codec.parse_client_frame(frame, v1=False, max_bytes=10_000)


def test_v1_frame_passes_byte_for_byte() -> None:
    frame = pack_v1("control", [*v1_parts(), b"\x00\x01"])
    bus_frame, header = codec.parse_client_frame(frame, v1=True, max_bytes=10_000)
    assert bus_frame is frame  # not re-packed: the client's bytes go on as they are
    assert header["msg_type"] == "execute_request"


@pytest.mark.parametrize(
    "frame",
    [
        "text is not v1",
        b"\x07" + b"\x00" * 7,
        pack_v1("nope", v1_parts()),
        pack_v1("shell", v1_parts(header=[1])),
        pack_v1("shell", [b"{not json", b"{}", b"{}", b"{}"]),
        pack_v1("shell", v1_parts(header={"msg_type": "x"})),
    ],
)
def test_bad_v1_frames_are_refused(frame: str | bytes) -> None:
    with pytest.raises(FrameError):
        codec.parse_client_frame(frame, v1=True, max_bytes=10_000)


def test_oversize_frames_raise_frame_too_large() -> None:
    with pytest.raises(codec.FrameTooLarge):
        codec.parse_client_frame(legacy(content={"code": "x" * 2000}), v1=False, max_bytes=1024)


def test_client_frame_is_the_bus_frame_for_v1_and_json_for_legacy() -> None:
    parts = v1_parts()
    frame = pack_v1("iopub", parts)
    assert codec.client_frame("iopub", parts, frame, v1=True) is frame
    text = codec.client_frame("iopub", parts, frame, v1=False)
    assert isinstance(text, str)
    msg = json.loads(text)
    assert msg["channel"] == "iopub" and msg["msg_id"] == "m1" and msg["buffers"] == []


def test_legacy_messages_with_buffers_become_binary_frames() -> None:
    parts = [*v1_parts(), b"\x00\x01\x02"]
    data = codec.client_frame("iopub", parts, pack_v1("iopub", parts), v1=False)
    assert isinstance(data, bytes)
    nparts, off0, off1 = struct.unpack_from(">3I", data)
    assert (nparts, off0) == (2, 12)
    assert data[off1:] == b"\x00\x01\x02"


def status(state: str, parent: object) -> list[bytes]:
    header = {"msg_id": "s", "msg_type": "status"}
    body = {"execution_state": state}
    return [
        json.dumps(header).encode(),
        json.dumps(parent).encode(),
        b"{}",
        json.dumps(body).encode(),
    ]


def test_final_dead_status_needs_iopub_dead_and_an_empty_parent() -> None:
    assert codec.final_dead_status("iopub", "status", status("dead", {}))
    assert not codec.final_dead_status("iopub", "status", status("dead", {"msg_id": "x"}))
    assert not codec.final_dead_status("iopub", "status", status("restarting", {}))
    assert not codec.final_dead_status("shell", "status", status("dead", {}))
    assert not codec.final_dead_status("iopub", "stream", status("dead", {}))


def test_stderr_notice_is_an_iopub_stream_with_the_tripping_parent() -> None:
    parent = {"msg_id": "req-1", "msg_type": "execute_request"}
    channel, parts = unpack_v1(codec.stderr_notice("IOPub message rate exceeded.", parent, "s1"))
    header = json.loads(parts[0])
    assert channel == "iopub"
    assert header["msg_type"] == "stream" and header["session"] == "s1"
    assert json.loads(parts[1]) == parent
    assert json.loads(parts[3]) == {"text": "IOPub message rate exceeded.\n", "name": "stderr"}


@pytest.mark.parametrize(
    ("offered", "forced", "selected"),
    [
        ([V1_PROTOCOL], None, V1_PROTOCOL),
        (["other", V1_PROTOCOL], None, V1_PROTOCOL),
        ([], None, None),
        (["unknown.protocol"], None, None),
        ([V1_PROTOCOL], "", None),
        ([], V1_PROTOCOL, None),
    ],
)
def test_subprotocol_is_v1_only_when_offered(
    offered: list[str], forced: str | None, selected: str | None
) -> None:
    assert select_subprotocol(offered, forced) == selected


def test_ping_timeout_is_three_intervals_but_at_least_30_s() -> None:
    assert ping_timeout(30) == 90
    assert ping_timeout(5) == 30


def test_zero_ping_interval_disables_pings() -> None:
    options = uvicorn_ws_options(ApiSettings(ws_ping_interval=0))
    assert options["ws_ping_interval"] is None and options["ws_ping_timeout"] is None
