"""Helpers of the kernel websocket tests: a real websocket client that speaks both protocols."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from kernelbus.framing import V1_PROTOCOL, pack_v1, unpack_v1
from kernelbus.testing.plugin import ApiProcess

Msg = dict[str, Any]


async def start_kernel(api: ApiProcess) -> str:
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
        response = await http.post("/api/kernels", json={"name": "python3"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


@contextlib.asynccontextmanager
async def started_kernel(api: ApiProcess) -> AsyncIterator[str]:
    """A kernel for as long as the block runs, deleted after it, even when a test failed: a
    kernel left on a shared worker takes a slot there and steers where later kernels go."""
    kernel_id = await start_kernel(api)
    try:
        yield kernel_id
    finally:
        await kernel_call(api, "DELETE", f"/api/kernels/{kernel_id}")


async def kernel_call(api: ApiProcess, method: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
        return await http.request(method, path)


def request(msg_type: str, content: Msg, channel: str | None = "shell", **header: Any) -> Msg:
    msg: Msg = {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "test",
            "session": "",
            "version": "5.3",
            "date": "2026-11-21T22:22:13.083749Z",
            **header,
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "buffers": [],
    }
    if channel is not None:
        msg["channel"] = channel
    return msg


def execute(code: str, **header: Any) -> Msg:
    return request("execute_request", {"code": code, "silent": False}, **header)


def decode_legacy_binary(frame: bytes) -> Msg:
    (nparts,) = struct.unpack_from(">I", frame)
    offsets = [*struct.unpack_from(f">{nparts}I", frame, 4), len(frame)]
    msg: Msg = json.loads(frame[offsets[0] : offsets[1]])
    msg["buffers"] = [frame[a:b] for a, b in itertools.pairwise(offsets[1:])]
    return msg


def decode_v1(frame: bytes) -> Msg:
    channel, parts = unpack_v1(frame)
    names = ("header", "parent_header", "metadata", "content")
    msg: Msg = {name: json.loads(part) for name, part in zip(names, parts, strict=False)}
    msg["channel"] = channel
    msg["buffers"] = parts[4:]
    msg["raw"] = frame
    return msg


@dataclass
class KernelSocket:
    """A websocket to `/api/kernels/{id}/channels`; decodes every frame into a dict."""

    ws: ClientConnection
    v1: bool
    raw_frames: list[str | bytes] = field(default_factory=list)

    async def send(self, msg: Msg) -> str:
        if self.v1:
            parts = [
                json.dumps(msg[k]).encode()
                for k in ("header", "parent_header", "metadata", "content")
            ]
            await self.ws.send(pack_v1(msg.get("channel") or "shell", parts))
        else:
            await self.ws.send(json.dumps(msg))
        return str(msg["header"]["msg_id"])

    async def recv(self, timeout: float = 30) -> Msg:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        self.raw_frames.append(frame)
        if isinstance(frame, str):
            return dict(json.loads(frame))
        return decode_v1(frame) if self.v1 else decode_legacy_binary(frame)

    async def until(self, done: Callable[[Msg], bool], timeout: float = 60) -> list[Msg]:
        """Every message up to and including the first for which `done` is true."""
        deadline = time.monotonic() + timeout
        seen: list[Msg] = []
        while True:
            msg = await self.recv(max(0.1, deadline - time.monotonic()))
            seen.append(msg)
            if done(msg):
                return seen

    async def run(self, code: str, timeout: float = 60) -> list[Msg]:
        """Execute and collect until both the reply and the idle status of the request."""
        msg_id = await self.send(execute(code))
        return await self.until_finished(msg_id, timeout)

    async def until_finished(self, msg_id: str, timeout: float = 60) -> list[Msg]:
        got_reply = got_idle = False

        def done(msg: Msg) -> bool:
            nonlocal got_reply, got_idle
            if msg["parent_header"].get("msg_id") != msg_id:
                return False
            got_reply = got_reply or msg["header"]["msg_type"] == "execute_reply"
            got_idle = got_idle or is_idle(msg)
            return got_reply and got_idle

        return await self.until(done, timeout)

    async def close(self) -> None:
        await self.ws.close()


def is_idle(msg: Msg) -> bool:
    return bool(
        msg["header"]["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
    )


def of_request(msgs: list[Msg], msg_id: str) -> list[Msg]:
    return [m for m in msgs if m["parent_header"].get("msg_id") == msg_id]


def types(msgs: list[Msg]) -> list[str]:
    return [str(m["header"]["msg_type"]) for m in msgs]


def ws_url(api: ApiProcess, kernel_id: str, session_id: str | None = None) -> str:
    url = f"{api.ws_url}/api/kernels/{kernel_id}/channels"
    return f"{url}?session_id={session_id}" if session_id else url


async def open_socket(
    api: ApiProcess,
    kernel_id: str,
    v1: bool = False,
    session_id: str | None = None,
    user_agent: str | None = None,
    ping_interval: float | None = 20,
) -> KernelSocket:
    extra = {"user_agent_header": user_agent} if user_agent else {}
    ws = await connect(
        ws_url(api, kernel_id, session_id),
        additional_headers=api.headers,
        **extra,  # type: ignore[arg-type]
        subprotocols=[V1_PROTOCOL] if v1 else None,  # type: ignore[list-item]
        max_size=None,
        compression=None,
        open_timeout=60,
        ping_interval=ping_interval,
    )
    assert ws.subprotocol == (V1_PROTOCOL if v1 else None)
    return KernelSocket(ws, v1)
