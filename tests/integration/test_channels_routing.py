"""Several clients on one kernel: replies to their sender only, iopub to all; bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from channels_support import (
    Msg,
    execute,
    kernel_call,
    of_request,
    open_socket,
    request,
    start_kernel,
    started_kernel,
    types,
)
from websockets.exceptions import ConnectionClosed

from kernelbus.testing.plugin import Services, Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def kernel_id(stack: Stack) -> AsyncIterator[str]:
    """One kernel for the module, deleted after it (see `started_kernel`)."""
    async with started_kernel(stack.api) as kid:
        yield kid


async def test_replies_go_to_the_sender_and_iopub_to_everyone(stack: Stack, kernel_id: str) -> None:
    a = await open_socket(stack.api, kernel_id, session_id="client-a")
    b = await open_socket(stack.api, kernel_id, session_id="client-b", v1=True)
    try:
        msg_a = execute("'from a'")
        id_a = await a.send(msg_a)
        seen_a = await a.until_finished(id_a)
        seen_b = await b.until(lambda m: is_idle_of(m, id_a))
        id_b = await b.send(execute("'from b'"))
        seen_b += await b.until_finished(id_b)
        seen_a += await a.until(lambda m: is_idle_of(m, id_b))
    finally:
        await a.close()
        await b.close()
    assert "execute_reply" in types(of_request(seen_a, id_a))
    assert "execute_reply" not in types(of_request(seen_b, id_a))
    assert "execute_result" in types(of_request(seen_b, id_a))
    assert "execute_reply" in types(of_request(seen_b, id_b))
    assert "execute_reply" not in types(of_request(seen_a, id_b))
    assert "execute_result" in types(of_request(seen_a, id_b))


def is_idle_of(msg: Msg, msg_id: str) -> bool:
    return bool(
        msg["parent_header"].get("msg_id") == msg_id
        and msg["header"]["msg_type"] == "status"
        and msg["content"]["execution_state"] == "idle"
    )


async def test_input_through_stdin(stack: Stack, kernel_id: str) -> None:
    sock = await open_socket(stack.api, kernel_id)
    try:
        msg = execute("x = input('name? ')\nprint('hello', x)")
        msg["content"]["allow_stdin"] = True
        msg_id = await sock.send(msg)
        prompt = (await sock.until(lambda m: m["header"]["msg_type"] == "input_request"))[-1]
        assert prompt["channel"] == "stdin" and prompt["content"]["prompt"] == "name? "
        await sock.send(request("input_reply", {"value": "kernelbus"}, channel="stdin"))
        seen = await sock.until_finished(msg_id)
    finally:
        await sock.close()
    out = "".join(m["content"]["text"] for m in seen if m["header"]["msg_type"] == "stream")
    assert out == "hello kernelbus\n"


async def test_interrupt_during_sleep(stack: Stack, kernel_id: str) -> None:
    sock = await open_socket(stack.api, kernel_id)
    try:
        # Wait for the cell's own output: an interrupt between execute_input and the user's
        # code is swallowed by ipykernel ("KeyboardInterrupt caught in kernel"), with no reply.
        msg_id = await sock.send(
            execute("import time; print('sleeping', flush=True); time.sleep(30)")
        )
        await sock.until(lambda m: m["header"]["msg_type"] == "stream")
        response = await kernel_call(stack.api, "POST", f"/api/kernels/{kernel_id}/interrupt")
        assert response.status_code == 204
        seen = await sock.until_finished(msg_id, timeout=25)
    finally:
        await sock.close()
    reply = next(m for m in seen if m["header"]["msg_type"] == "execute_reply")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"


async def test_bad_frames_are_dropped_for_that_client_only(stack: Stack, kernel_id: str) -> None:
    bad = await open_socket(stack.api, kernel_id, session_id="bad")
    good = await open_socket(stack.api, kernel_id, session_id="good")
    try:
        for frame in [
            "not json",
            "[]",
            json.dumps({"header": {}}),
            json.dumps({**execute("1"), "channel": "nope"}),
        ]:
            await bad.ws.send(frame)
        await bad.ws.send(b"\x00\x00\x00\x09garbage")
        # The bad client's socket still works, and so does the other client's.
        assert "execute_reply" in types(await bad.run("1+1"))
        assert "execute_reply" in types(await good.run("2+2"))
    finally:
        await bad.close()
        await good.close()


async def test_oversize_frame_closes_with_1009_and_others_keep_working(
    stack_services: Services,
) -> None:
    """An api replica with a small frame limit, its kernel on the stack's worker."""
    api = stack_services.api(env={"KERNELBUS_WS_MAX_MESSAGE_BYTES": "65536"})
    kernel_id = await start_kernel(api)
    big = await open_socket(api, kernel_id, session_id="big")
    other = await open_socket(api, kernel_id, session_id="other")
    try:
        await big.ws.send(json.dumps(execute("x = '" + "y" * 100_000 + "'")))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(big.ws.recv(), 30)
        assert big.ws.close_code == 1009
        assert "execute_reply" in types(await other.run("3+3"))
    finally:
        await big.close()
        await other.close()
        await kernel_call(api, "DELETE", f"/api/kernels/{kernel_id}")


async def test_a_new_connection_with_the_same_session_replaces_the_old(
    stack: Stack, kernel_id: str
) -> None:
    old = await open_socket(stack.api, kernel_id, session_id="same")
    new = await open_socket(stack.api, kernel_id, session_id="same")
    try:
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(old.ws.recv(), 30)
        assert old.ws.close_code == 1000
        assert "execute_reply" in types(await new.run("5+5"))
    finally:
        await old.close()
        await new.close()
