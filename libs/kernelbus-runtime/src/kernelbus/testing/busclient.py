"""A bus-level Jupyter client for tests: what an api connection does, without HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.session import Session
from nats.aio.client import Client
from nats.aio.msg import Msg

from kernelbus import chunking, subjects
from kernelbus.bus import request
from kernelbus.framing import pack_v1, unpack_v1
from kernelbus.messages import AttachConnection, AttachReply, DetachConnection


@dataclass
class Received:
    channel: str
    header: dict[str, Any]
    parent: dict[str, Any]
    content: dict[str, Any]
    buffers: list[bytes]

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))


@dataclass
class BusConnection:
    nc: Client
    kernel_id: str
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    conn_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    api_instance: str = field(default_factory=lambda: f"tests-{uuid.uuid4().hex[:8]}")
    inbox: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    session: Session = field(default_factory=Session)
    sent: int = 0
    """Client messages sent so far (each is numbered in its reply subject, as an api does)."""

    async def attach(self) -> AttachReply:
        reassembler = chunking.Reassembler()

        async def on_msg(msg: Msg) -> None:
            frame = reassembler.feed(msg.headers, msg.data)
            if frame is None:
                return
            channel, parts = unpack_v1(frame)
            await self.inbox.put(
                Received(
                    channel,
                    json.loads(parts[0]),
                    json.loads(parts[1]),
                    json.loads(parts[3]),
                    parts[4:],
                )
            )

        async def pong(msg: Msg) -> None:  # answer worker pings as an api replica does
            await msg.respond(b"")

        self._subs = [
            await self.nc.subscribe(subjects.connection(self.conn_id), cb=on_msg),
            await self.nc.subscribe(subjects.kernel_iopub(self.kernel_id), cb=on_msg),
            await self.nc.subscribe(subjects.api_ping(self.api_instance), cb=pong),
        ]
        await self.nc.flush()
        attach = AttachConnection(
            kernel_id=self.kernel_id,
            conn_id=self.conn_id,
            session_id=self.session_id,
            api_instance=self.api_instance,
        )
        return await request(
            self.nc, subjects.kernel_attach(self.kernel_id), attach, 10, AttachReply
        )

    async def detach(self) -> None:
        detach = DetachConnection(kernel_id=self.kernel_id, conn_id=self.conn_id)
        await request(self.nc, subjects.kernel_attach(self.kernel_id), detach, 10)
        await self.crash()

    async def crash(self) -> None:
        """Vanish like a killed api replica: no detach, no more pings answered."""
        for sub in self._subs:
            await sub.unsubscribe()
        await self.nc.flush()

    async def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        msg = self.session.msg(msg_type, content=content)
        pack = self.session.pack
        parts = [
            pack(msg["header"]),
            pack(msg["parent_header"]),
            pack(msg["metadata"]),
            pack(msg["content"]),
        ]
        self.sent += 1
        await self.nc.publish(
            subjects.kernel_input(self.kernel_id),
            pack_v1(channel, parts),
            reply=subjects.input_reply(self.api_instance, self.conn_id, self.sent),
        )
        return str(msg["header"]["msg_id"])

    async def execute(self, code: str, timeout: float = 30) -> list[Received]:
        """Run `code`; every message of that request until its reply and `idle` arrived."""
        msg_id = await self.send("execute_request", {"code": code, "silent": False})
        return await self.until_done(msg_id, timeout)

    async def until_done(self, msg_id: str, timeout: float = 30) -> list[Received]:
        seen: list[Received] = []
        replied = idle = False
        async with asyncio.timeout(timeout):
            while not (replied and idle):
                msg = await self.inbox.get()
                if msg.parent.get("msg_id") != msg_id:
                    continue
                seen.append(msg)
                replied = replied or msg.msg_type.endswith("_reply")
                idle = idle or (
                    msg.msg_type == "status" and msg.content.get("execution_state") == "idle"
                )
        return seen

    async def next_matching(self, predicate: Any, timeout: float = 30) -> Received:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.inbox.get()
                if predicate(msg):
                    return msg
