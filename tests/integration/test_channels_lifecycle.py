"""Kernel lifecycle seen on the websocket: restart, shutdown, reconnect with replay, counts."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from channels_support import (
    KernelSocket,
    Msg,
    execute,
    kernel_call,
    open_socket,
    start_kernel,
    types,
)
from websockets.exceptions import ConnectionClosed

from kernelbus.testing.plugin import ApiProcess, Services, Stack
from kernelbus.testing.waiting import FileGate, until
from kernelbus.timefmt import parse_timestamp

pytestmark = pytest.mark.integration


async def test_restart_keeps_the_socket_and_delivers_the_new_kernel(stack: Stack) -> None:
    kernel_id = await start_kernel(stack.api)
    sock = await open_socket(stack.api, kernel_id)
    try:
        await sock.run("import os; pid = os.getpid()")
        response = await kernel_call(stack.api, "POST", f"/api/kernels/{kernel_id}/restart")
        assert response.status_code == 200
        seen = await sock.run("'pid' in globals()")
    finally:
        await sock.close()
        await kernel_call(stack.api, "DELETE", f"/api/kernels/{kernel_id}")
    result = next(m for m in seen if m["header"]["msg_type"] == "execute_result")
    assert result["content"]["data"]["text/plain"] == "False"


async def test_shutdown_delivers_dead_and_closes_cleanly(stack: Stack) -> None:
    kernel_id = await start_kernel(stack.api)
    sock = await open_socket(stack.api, kernel_id, v1=True)
    try:
        await sock.run("1")
        response = await kernel_call(stack.api, "DELETE", f"/api/kernels/{kernel_id}")
        assert response.status_code == 204
        seen = await sock.until(
            lambda m: (
                m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "dead"
            )
        )
        assert seen[-1]["parent_header"] == {}
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(sock.ws.recv(), 30)
        assert sock.ws.close_code == 1000
    finally:
        await sock.close()


async def output_while_away(
    first: ApiProcess, second: ApiProcess, kernel_id: str, workdir: Path
) -> list[Msg]:
    """Start a gated print, leave, reconnect (same session_id) and collect what was owed.

    The cell prints only once the socket is closed (the test opens its gate then). The
    reconnect waits until the cell ran to its end while nobody was connected: the cell
    touches a marker last, and the registry then shows an idle kernel active after it.
    """
    session_id = uuid.uuid4().hex
    sock = await open_socket(first, kernel_id, session_id=session_id)
    gate, marker = FileGate(workdir / "closed"), workdir / "done"
    code = gate.wait_code() + (
        "import sys, pathlib; print('while away'); sys.stdout.flush(); "
        f"pathlib.Path({str(marker)!r}).touch()"
    )
    msg_id = await sock.send(execute(code))
    await sock.until(lambda m: m["header"]["msg_type"] == "execute_input")
    await sock.close()
    await wait_until_connections(first, kernel_id, 0)
    gate.open()
    await until(lambda: idle_after(first, kernel_id, marker), what="the kernel idle after the cell")
    again = await open_socket(second, kernel_id, session_id=session_id)
    try:
        return await again.until_finished(msg_id, timeout=30)
    finally:
        await again.close()


async def test_reconnect_with_the_same_session_receives_output_produced_meanwhile(
    stack: Stack, tmp_path: Path
) -> None:
    kernel_id = await start_kernel(stack.api)
    try:
        seen = await output_while_away(stack.api, stack.api, kernel_id, tmp_path)
    finally:
        await kernel_call(stack.api, "DELETE", f"/api/kernels/{kernel_id}")
    texts = [m["content"]["text"] for m in seen if m["header"]["msg_type"] == "stream"]
    assert texts == ["while away\n"]
    assert "execute_reply" in types(seen)


async def test_reconnect_through_another_api_replica(
    stack: Stack, stack_services: Services, tmp_path: Path
) -> None:
    other = stack_services.api()
    kernel_id = await start_kernel(stack.api)
    try:
        seen = await output_while_away(stack.api, other, kernel_id, tmp_path)
    finally:
        await kernel_call(stack.api, "DELETE", f"/api/kernels/{kernel_id}")
    texts = [m["content"]["text"] for m in seen if m["header"]["msg_type"] == "stream"]
    assert texts == ["while away\n"]


async def model(api: ApiProcess, kernel_id: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers) as http:
        return dict((await http.get(f"/api/kernels/{kernel_id}")).json())


async def connections(api: ApiProcess, kernel_id: str) -> int:
    return int(str((await model(api, kernel_id))["connections"]))


def mtime(path: Path) -> float | None:
    return path.stat().st_mtime if path.exists() else None


async def idle_after(api: ApiProcess, kernel_id: str, marker: Path) -> bool:
    touched = mtime(marker)
    if touched is None:
        return False
    current = await model(api, kernel_id)
    active = parse_timestamp(str(current["last_activity"])).timestamp()
    return current["execution_state"] == "idle" and active >= touched


async def wait_until_connections(api: ApiProcess, kernel_id: str, n: int) -> None:
    async def counted() -> bool:
        return await connections(api, kernel_id) == n

    await until(counted, what=f"{n} connections")


async def test_connection_counts_follow_open_websockets(stack: Stack) -> None:
    kernel_id = await start_kernel(stack.api)
    socks: list[KernelSocket] = []
    try:
        for _ in range(2):
            socks.append(await open_socket(stack.api, kernel_id))
        await wait_until_connections(stack.api, kernel_id, 2)
        await socks.pop().close()
        await wait_until_connections(stack.api, kernel_id, 1)
    finally:
        for sock in socks:
            await sock.close()
        await kernel_call(stack.api, "DELETE", f"/api/kernels/{kernel_id}")
