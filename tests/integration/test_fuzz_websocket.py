"""Fuzzed websocket frames (hypothesis, seeded) for both protocols against a real api and
kernel: random bytes and text, truncated v1 frames, inconsistent and huge offset tables,
invalid UTF-8 and JSON, oversized frames. Only the fuzzing connection is affected: after every
case another client on the same kernel still executes code, and the api logs no traceback."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from channels_support import execute
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from kernelbus import natsserver
from kernelbus.framing import V1_PROTOCOL, pack_v1
from kernelbus.testing.plugin import ApiProcess, Services

# The fuzzers, then `test_nothing_changed`: steps of one scenario, kept in file order when shuffled.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scenario]

MAX_FRAME = 65536
FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Target:
    api: ApiProcess
    services: Services
    kernel_id: str
    witness: ClientConnection
    counter: int = 0

    def url(self) -> str:
        return f"{self.api.ws_url}/api/kernels/{self.kernel_id}/channels"

    def open(self, v1: bool) -> ClientConnection:
        return connect(
            self.url(),
            additional_headers=self.api.headers,
            subprotocols=[V1_PROTOCOL] if v1 else None,  # type: ignore[list-item]
            max_size=None,
            open_timeout=30,
        )

    def witness_works(self) -> None:
        """The other client on the kernel runs code and gets its answer."""
        self.counter += 1
        msg = execute(f"print({self.counter})")
        self.witness.send(json.dumps(msg))
        expected, text, replied = f"{self.counter}\n", "", False
        while not (text == expected and replied):
            got: dict[str, Any] = json.loads(self.witness.recv(timeout=60))
            if got["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                continue
            if got["msg_type"] == "stream":  # may come in several pieces
                text += got["content"]["text"]
                assert expected.startswith(text), got
            if got["msg_type"] == "execute_reply":
                assert got["content"]["status"] == "ok", got
                replied = True


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz-ws")
    server = natsserver.start(root / "nats", log_file=root / "nats.log")
    services = Services(root, server.url)
    try:
        services.worker()
        api = services.api({"KERNELBUS_WS_MAX_MESSAGE_BYTES": str(MAX_FRAME)})
        with httpx.Client(base_url=api.url, headers=api.headers, timeout=60) as http:
            created = http.post("/api/kernels", json={"name": "python3"})
            assert created.status_code == 201, created.text
        kernel_id = created.json()["id"]
        target = Target(api, services, kernel_id, witness=None)  # type: ignore[arg-type]
        with target.open(v1=False) as witness:
            target.witness = witness
            yield target
    finally:
        services.stop_all()
        server.stop()


def _valid_v1() -> bytes:
    msg = execute("1")
    parts = [
        json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata", "content")
    ]
    return pack_v1("shell", parts)


def _truncated(cut: int) -> bytes:
    frame = _valid_v1()
    return frame[: cut % len(frame)]


def _bad_offsets(index: int, value: int) -> bytes:
    frame = bytearray(_valid_v1())
    (n,) = struct.unpack_from("<Q", frame, 0)
    struct.pack_into("<Q", frame, 8 * (1 + index % n), value)
    return bytes(frame)


def _huge_table(n: int) -> bytes:
    return struct.pack("<Q", n) + b"\x00" * 64


u64 = st.integers(0, 2**64 - 1)
binary_frames = st.one_of(
    st.binary(max_size=2048),
    st.integers(0, 10_000).map(_truncated),
    st.builds(_bad_offsets, st.integers(0, 20), u64),
    u64.map(_huge_table),
)
text_frames = st.one_of(
    st.text(max_size=2048),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
        max_leaves=12,
    ).map(json.dumps),
    st.builds(
        lambda key, value: json.dumps({**execute("1"), key: value}),
        st.sampled_from(["header", "content", "channel", "parent_header", "buffers"]),
        st.none() | st.integers() | st.text(max_size=10),
    ),
)


def send_and_close(target: Target, v1: bool, frame: bytes | str, as_text: bool | None) -> None:
    with target.open(v1) as ws:
        try:
            ws.send(frame, text=as_text)
            ws.send(json.dumps(execute("2")))  # the connection may have been closed already
            ws.recv(timeout=0.2)
        except (ConnectionClosed, TimeoutError):
            pass


@FUZZ
@given(v1=st.booleans(), frame=binary_frames)
@example(v1=True, frame=_huge_table(2**61))
@example(v1=True, frame=_bad_offsets(0, 2**64 - 1))
@example(v1=False, frame=b"\x00" * (MAX_FRAME + 1))
def test_binary_frames(target: Target, v1: bool, frame: bytes) -> None:
    send_and_close(target, v1, frame, as_text=False)
    target.witness_works()


@FUZZ
@given(v1=st.booleans(), frame=text_frames)
@example(v1=False, frame="x" * (MAX_FRAME + 1))
def test_text_frames(target: Target, v1: bool, frame: str) -> None:
    send_and_close(target, v1, frame, as_text=True)
    target.witness_works()


@FUZZ
@given(v1=st.booleans(), frame=st.binary(min_size=1, max_size=256))
@example(v1=False, frame=b"\xff\xfe{")
def test_invalid_utf8_in_text_frames(target: Target, v1: bool, frame: bytes) -> None:
    send_and_close(target, v1, frame, as_text=True)
    target.witness_works()


def test_an_oversized_frame_closes_only_its_connection_with_1009(target: Target) -> None:
    with target.open(v1=True) as ws:
        ws.send(b"\x00" * (MAX_FRAME + 1))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    target.witness_works()


def test_the_api_logged_no_traceback(target: Target) -> None:
    """Runs after the fuzzers (file order)."""
    target.witness_works()
    for process in target.services.started:
        assert process.alive(), process.log()[-3000:]
        assert "Traceback" not in process.log(), process.log()[-5000:]
