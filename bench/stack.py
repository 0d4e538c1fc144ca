"""Bench helpers: a private Kernelbus (nats + worker + api) or a given URL, and a direct
jupyter_client kernel to compare against. Clients speak only HTTP + websocket to Kernelbus."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from websockets.asyncio.client import ClientConnection, connect

from kernelbus import natsserver
from kernelbus.framing import V1_PROTOCOL, pack_v1, unpack_v1
from kernelbus.testing.plugin import Services


@dataclass
class Target:
    url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", help="a running Kernelbus api (default: start a private one)")
    parser.add_argument("--token", default="", help="its token")
    parser.add_argument("-n", type=int, default=200, help="samples")
    return parser.parse_args()


@asynccontextmanager
async def kernelbus(args: argparse.Namespace, env: dict[str, str]) -> AsyncIterator[Target]:
    """The api to measure: `--url`, or nats + worker + api started here and stopped after."""
    if args.url:
        yield Target(args.url.rstrip("/"), args.token)
        return
    root = Path(tempfile.mkdtemp(prefix="kernelbus-bench-"))
    nats = natsserver.start(root / "nats", log_file=root / "nats.log")
    services = Services(root, nats.url)
    try:
        services.worker()
        api = services.api(env=env, token="bench-token")
        yield Target(api.url, api.token)
    finally:
        services.stop_all()
        nats.stop()


@asynccontextmanager
async def kernel_socket(target: Target) -> AsyncIterator[ClientConnection]:
    """A fresh kernel through the REST api and a v1 websocket to it; deleted afterwards."""
    async with httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=60) as http:
        response = await http.post("/api/kernels", json={"name": "python3"})
        response.raise_for_status()
        kernel_id = response.json()["id"]
        ws_url = target.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
        try:
            async with connect(
                f"{ws_url}?session_id={uuid.uuid4().hex}",
                additional_headers=target.headers,
                subprotocols=[V1_PROTOCOL],  # type: ignore[list-item]
                max_size=None,
                compression=None,
            ) as ws:
                yield ws
        finally:
            await http.delete(f"/api/kernels/{kernel_id}")


@asynccontextmanager
async def direct_kernel() -> AsyncIterator[AsyncKernelClient]:
    """A python3 kernel started with jupyter_client, spoken to over ZMQ: the baseline."""
    km = AsyncKernelManager(kernel_name="python3")
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        yield kc
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


def execute_frame(code: str) -> tuple[str, bytes]:
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": "bench",
        "session": "bench",
        "version": "5.3",
        "date": "2026-01-01T00:00:00.000000Z",
    }
    content = {"code": code, "silent": False, "store_history": False}
    parts = [json.dumps(p).encode() for p in (header, {}, {}, content)]
    return msg_id, pack_v1("shell", parts)


def decode(frame: bytes | str) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """channel, header, parent_header, content of a v1 frame."""
    assert isinstance(frame, bytes)
    channel, parts = unpack_v1(frame)
    return channel, json.loads(parts[0]), json.loads(parts[1]), json.loads(parts[3])


async def ws_execute(
    ws: ClientConnection, code: str
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Send an execute_request; return (msg_type, content, header) until reply and idle."""
    msg_id, frame = execute_frame(code)
    await ws.send(frame)
    return await ws_collect(ws, msg_id)


async def ws_collect(
    ws: ClientConnection, msg_id: str
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    seen = []
    reply = idle = False
    while not (reply and idle):
        _, header, parent, content = decode(await ws.recv())
        if parent.get("msg_id") != msg_id:
            continue
        seen.append((header["msg_type"], content, header))
        reply = reply or header["msg_type"] == "execute_reply"
        idle = idle or (header["msg_type"] == "status" and content["execution_state"] == "idle")
    return seen


async def zmq_execute(
    kc: AsyncKernelClient, code: str
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    msg_id = kc.execute(code, store_history=False)
    reply = await kc.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id
    seen = [("execute_reply", reply["content"], reply["header"])]
    while True:
        msg = await kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        seen.append((msg["msg_type"], msg["content"], msg["header"]))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return seen


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples_ms, n=100)
    return {"p50": statistics.median(samples_ms), "p95": qs[94], "min": min(samples_ms)}


def run(main: Any) -> None:
    asyncio.run(main)
