"""A client that keeps talking to one kernel while processes die (chaos tests, bench/chaos.py).

`KernelClient` speaks the legacy JSON websocket protocol and, when its websocket closes,
reconnects as JupyterLab does: the same `session_id` in the URL, so the worker replays the
output produced while it was away. It counts messages it receives twice (same `msg_id`).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from kernelbus.testing.embedded import EmbeddedRun

Msg = dict[str, Any]


def execute_request(code: str, session: str) -> Msg:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "username": "chaos",
            "session": session,
            "version": "5.3",
            "date": "2026-11-29T00:00:00.000000Z",
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": False},
        "buffers": [],
        "channel": "shell",
    }


@dataclass
class Outcome:
    """What one execution produced, as the client saw it."""

    stdout: str = ""
    duplicates: int = 0
    reconnects: int = 0
    first_output_after: dict[float, float] = field(default_factory=dict)
    """For each mark (a kill time), the monotonic time of the first output received after it."""


@dataclass
class KernelClient:
    ws_base: str
    kernel_id: str
    headers: dict[str, str]
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ws: ClientConnection | None = None
    marks: list[float] = field(default_factory=list)
    """Kill times noted with `mark()`: `Outcome.first_output_after` answers for each."""

    @property
    def url(self) -> str:
        return f"{self.ws_base}/api/kernels/{self.kernel_id}/channels?session_id={self.session_id}"

    async def connect(self, within: float) -> None:
        """Open the websocket, retrying (api restarting, NATS away) for `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            try:
                self.ws = await connect(self.url, additional_headers=self.headers, max_size=None)
                return
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no websocket within {within} s: {exc}") from exc
                await asyncio.sleep(0.2)

    def mark(self) -> float:
        now = time.monotonic()
        self.marks.append(now)
        return now

    async def execute(self, code: str, reconnect_within: float = 30) -> str:
        """Send an execute_request once (reconnecting first if the websocket is gone)."""
        msg = execute_request(code, self.session_id)
        while True:
            if self.ws is None:
                await self.connect(reconnect_within)
            assert self.ws is not None
            try:
                await self.ws.send(json.dumps(msg))
                return str(msg["header"]["msg_id"])
            except ConnectionClosed:
                self.ws = None

    async def collect(self, msg_id: str, within: float, reconnect_within: float = 30) -> Outcome:
        """Every message of request `msg_id` until its reply and idle status, reconnecting
        (same session_id) whenever the websocket closes."""
        outcome = Outcome()
        seen: set[str] = set()
        replied = idle = False
        deadline = time.monotonic() + within
        while not (replied and idle):
            msg = await self._next(deadline, reconnect_within, outcome)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["header"]["msg_id"] in seen:
                outcome.duplicates += 1
                continue
            seen.add(msg["header"]["msg_id"])
            kind = msg["header"]["msg_type"]
            if kind == "stream" and msg["content"].get("name") == "stdout":
                outcome.stdout += msg["content"]["text"]
                now = time.monotonic()
                for mark in self.marks:
                    if now > mark:
                        outcome.first_output_after.setdefault(mark, now)
            replied = replied or kind == "execute_reply"
            idle = idle or (kind == "status" and msg["content"]["execution_state"] == "idle")
        return outcome

    async def _next(self, deadline: float, reconnect_within: float, outcome: Outcome) -> Msg:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the kernel did not finish in time")
            if self.ws is None:
                await self.connect(reconnect_within)
                outcome.reconnects += 1
            assert self.ws is not None
            try:
                frame = await asyncio.wait_for(self.ws.recv(), left)
            except ConnectionClosed:
                self.ws = None
                continue
            if isinstance(frame, str):
                return dict(json.loads(frame))

    async def run_text(self, code: str, within: float = 60, reconnect_within: float = 30) -> str:
        msg_id = await self.execute(code, reconnect_within)
        return (await self.collect(msg_id, within, reconnect_within)).stdout

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None


async def sink_events(run: EmbeddedRun, schema: str | None = None) -> list[dict[str, Any]]:
    """Every event stored by the events service (all pages), optionally of one schema."""
    found: list[dict[str, Any]] = []
    after: int | None = None
    async with httpx.AsyncClient(base_url=run.events_url, headers=run.headers, timeout=10) as http:
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if schema:
                params["schema"] = schema
            if after is not None:
                params["after"] = after
            response = await http.get("/api/events", params=params)
            response.raise_for_status()
            page = response.json()
            found += page["events"]
            if not page["more"]:
                return found
            after = page["cursor"]
