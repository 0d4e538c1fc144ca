"""Large outputs (chunked over the bus) and iopub rate limiting, end to end."""

from __future__ import annotations

import json

import nats
import pytest
from channels_support import execute, kernel_call, open_socket, start_kernel, types

from kernelbus import chunking
from kernelbus.framing import pack_v1
from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
async def unlimited(services: Services) -> ApiProcess:
    services.worker()
    return services.api(env={"KERNELBUS_LIMIT_RATE": "false"})


@pytest.mark.parametrize("v1", [False, True], ids=["legacy", "v1"])
async def test_20_mb_display_data_arrives_intact(unlimited: ApiProcess, v1: bool) -> None:
    kernel_id = await start_kernel(unlimited)
    sock = await open_socket(unlimited, kernel_id, v1=v1)
    try:
        code = "display({'text/plain': 'x' * 20_000_000 + 'END'}, raw=True)"
        seen = await sock.run(code, timeout=110)
    finally:
        await sock.close()
        await kernel_call(unlimited, "DELETE", f"/api/kernels/{kernel_id}")
    shown = [m for m in seen if m["header"]["msg_type"] == "display_data"]
    assert len(shown) == 1
    text = shown[0]["content"]["data"]["text/plain"]
    assert len(text) == 20_000_003 and text.endswith("END") and set(text[:-3]) == {"x"}


async def test_a_client_that_pings_while_a_large_frame_is_sent_keeps_its_socket(
    unlimited: ApiProcess,
) -> None:
    # Python clients ping by default; a pong owed while the api drains a large frame to the
    # client once closed the socket with 1011 (two waiters on one transport drain).
    kernel_id = await start_kernel(unlimited)
    sock = await open_socket(unlimited, kernel_id, ping_interval=0.005)
    try:
        code = "for _ in range(3): display({'text/plain': 'x' * 20_000_000}, raw=True)"
        seen = await sock.run(code, timeout=110)
    finally:
        await sock.close()
        await kernel_call(unlimited, "DELETE", f"/api/kernels/{kernel_id}")
    shown = [m for m in seen if m["header"]["msg_type"] == "display_data"]
    assert [len(m["content"]["data"]["text/plain"]) for m in shown] == [20_000_000] * 3


async def test_50_mb_of_stream_output_arrives_intact(unlimited: ApiProcess) -> None:
    kernel_id = await start_kernel(unlimited)
    sock = await open_socket(unlimited, kernel_id, v1=True)
    try:
        code = "import sys\nfor i in range(50):\n    sys.stdout.write(str(i % 10) * 1_000_000)"
        seen = await sock.run(code, timeout=110)
    finally:
        await sock.close()
        await kernel_call(unlimited, "DELETE", f"/api/kernels/{kernel_id}")
    out = "".join(m["content"]["text"] for m in seen if m["header"]["msg_type"] == "stream")
    assert out == "".join(str(i % 10) * 1_000_000 for i in range(50))


async def test_rate_limit_sends_one_notice_then_drops(services: Services) -> None:
    services.worker()
    api = services.api(
        env={"KERNELBUS_IOPUB_MSG_RATE_LIMIT": "20", "KERNELBUS_RATE_LIMIT_WINDOW": "1"}
    )
    kernel_id = await start_kernel(api)
    sock = await open_socket(api, kernel_id)
    try:
        seen = await sock.run("for i in range(100):\n    display(i)")
        after = await sock.run("display('after idle')")
    finally:
        await sock.close()
        await kernel_call(api, "DELETE", f"/api/kernels/{kernel_id}")
    shown = [
        m["content"]["data"]["text/plain"]
        for m in seen
        if m["header"]["msg_type"] == "display_data"
    ]
    assert shown == [str(i) for i in range(20)]
    notices = [m for m in seen if m["header"]["msg_type"] == "stream"]
    assert len(notices) == 1
    assert notices[0]["content"]["name"] == "stderr"
    assert notices[0]["content"]["text"].startswith("IOPub message rate exceeded.")
    first_display = next(m for m in seen if m["header"]["msg_type"] == "display_data")
    assert notices[0]["parent_header"] == first_display["parent_header"]
    assert types(seen)[-2:] in (["execute_reply", "status"], ["status", "execute_reply"])
    assert "display_data" in types(after)  # the idle status reset the limiter


async def test_client_message_over_max_payload_is_chunked_to_the_kernel(
    unlimited: ApiProcess,
) -> None:
    kernel_id = await start_kernel(unlimited)
    sock = await open_socket(unlimited, kernel_id)
    try:
        seen = await sock.run("x = '" + "y" * 9_000_000 + "'\nlen(x)", timeout=110)
    finally:
        await sock.close()
        await kernel_call(unlimited, "DELETE", f"/api/kernels/{kernel_id}")
    result = next(m for m in seen if m["header"]["msg_type"] == "execute_result")
    assert result["content"]["data"]["text/plain"] == "9000000"


def execute_frame_of_size(size: int) -> tuple[str, bytes, int]:
    """A v1 execute_request frame of exactly `size` bytes: (msg_id, frame, padding length)."""
    header = execute("")["header"]

    def frame(pad: int) -> bytes:
        content = {"code": "x = '" + "y" * pad + "'\nlen(x)", "silent": False}
        return pack_v1("shell", [json.dumps(p).encode() for p in (header, {}, {}, content)])

    pad = size - len(frame(0))
    return header["msg_id"], frame(pad), pad


@pytest.mark.parametrize("delta", [-1, 0, 1])
async def test_client_frames_at_the_chunking_boundary(
    unlimited: ApiProcess, nats_url: str, delta: int
) -> None:
    nc = await nats.connect(nats_url)
    limit = nc.max_payload - chunking.HEADROOM
    await nc.close()
    msg_id, frame, pad = execute_frame_of_size(limit + delta)
    assert len(frame) == limit + delta
    kernel_id = await start_kernel(unlimited)
    sock = await open_socket(unlimited, kernel_id, v1=True)
    try:
        await sock.ws.send(frame)
        seen = await sock.until_finished(msg_id, timeout=110)
    finally:
        await sock.close()
        await kernel_call(unlimited, "DELETE", f"/api/kernels/{kernel_id}")
    result = next(m for m in seen if m["header"]["msg_type"] == "execute_result")
    assert result["content"]["data"]["text/plain"] == str(pad)
