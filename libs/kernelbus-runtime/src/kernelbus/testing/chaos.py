"""A client that keeps talking to one kernel while processes die (chaos tests, bench/chaos.py).

`KernelClient` speaks the legacy JSON websocket protocol and, when its websocket closes,
reconnects as JupyterLab does: the same `session_id` in the URL, so the worker replays the
output produced while it was away. It counts messages it receives twice (same `msg_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
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

    async def collect(
        self,
        msg_id: str,
        within: float,
        reconnect_within: float = 30,
        outcome: Outcome | None = None,
    ) -> Outcome:
        """Every message of request `msg_id` until its reply and idle status, reconnecting
        (same session_id) whenever the websocket closes; fills `outcome` as it goes."""
        outcome = outcome or Outcome()
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


# --- one chaos phase: kill -9 a process while a cell prints a counter ----------------------

COUNTER_CODE = "import time\nfor i in range({n}):\n    print(i, flush=True)\n    time.sleep(0.1)\n"


@dataclass
class Phase:
    """What killing `target` did, as measured from outside (seconds after the kill)."""

    target: str
    old_pid: int = 0
    rest: float | None = None
    """Until `GET /api/kernels/<id>` answered 200 again."""
    ready: float | None = None
    """Until the replaced process was ready (its health endpoint, or its "ready" log line)."""
    output: float | None = None
    """Until the client received kernel output again."""
    values: list[int] = field(default_factory=list)
    duplicates: int = 0
    reconnects: int = 0
    state: str = ""
    """What `print(x)` printed in the same kernel afterwards."""

    @property
    def recovery(self) -> float | None:
        parts = (self.rest, self.ready, self.output)
        return None if None in parts else max(p for p in parts if p is not None)


async def _poll(check: Any, since: float, within: float) -> float | None:
    """Seconds from `since` until the async `check()` is true; None if not within `within`."""
    while time.monotonic() - since < within:
        with contextlib.suppress(Exception):
            if await check():
                return time.monotonic() - since
        await asyncio.sleep(0.1)
    return None


def _newest_log(run: EmbeddedRun, service: str) -> str:
    logs = sorted((run.data_dir / "logs").glob(f"{service}-*.log"))
    return logs[-1].read_text(errors="replace") if logs else ""


def _ready_check(run: EmbeddedRun, target: str, old_pid: int) -> Any:
    """An async check that the process replacing `old_pid` is up and doing its job."""

    async def http_ok(url: str) -> bool:
        async with httpx.AsyncClient(headers=run.headers, timeout=2) as http:
            return (await http.get(url)).status_code == 200

    def replaced() -> bool:
        return any(pid != old_pid for pid in run.pids_of(target))

    async def check() -> bool:
        if not replaced():
            return False
        if target == "kernelbus-api":
            return await http_ok(f"{run.url}/api/health/ready")
        if target == "kernelbus-events":
            return await http_ok(f"{run.events_url}/api/health/ready")
        if target == "kernelbus-worker":
            return "kernel-worker ready" in _newest_log(run, target)
        if target == "kernelbus-culler":
            return " ready" in _newest_log(run, target)
        return await http_ok(f"{run.url}/api/health/ready") and await http_ok(
            f"{run.events_url}/api/health/ready"
        )

    return check


async def chaos_phase(
    run: EmbeddedRun, client: KernelClient, target: str, count: int, within: float = 120
) -> Phase:
    """Run a counter cell (`count` values, 0.1 s apart), SIGKILL `target` once output flows,
    and measure the recovery; then ask the same kernel for `x`."""
    phase = Phase(target, old_pid=run.pid_of(target))
    outcome = Outcome()
    msg_id = await client.execute(COUNTER_CODE.format(n=count))
    collecting = asyncio.create_task(client.collect(msg_id, within, within, outcome))
    began = time.monotonic()

    async def flowing() -> bool:
        if collecting.done():
            collecting.result()  # raise what went wrong
        return outcome.stdout.count("\n") >= 10

    if await _poll(flowing, began, 60) is None:
        collecting.cancel()
        raise TimeoutError("the counter produced no output")
    killed = client.mark()
    os.kill(phase.old_pid, signal.SIGKILL)

    async def rest_ok() -> bool:
        async with httpx.AsyncClient(headers=run.headers, timeout=2) as http:
            return (await http.get(f"{run.url}/api/kernels/{client.kernel_id}")).status_code == 200

    phase.rest, phase.ready = await asyncio.gather(
        _poll(rest_ok, killed, within),
        _poll(_ready_check(run, target, phase.old_pid), killed, within),
    )
    try:
        await collecting
    finally:
        run.census()
        first = outcome.first_output_after.get(killed)
        phase.output = None if first is None else first - killed
        phase.values = [int(v) for v in outcome.stdout.split()]
        phase.duplicates, phase.reconnects = outcome.duplicates, outcome.reconnects
    phase.state = await client.run_text("print(x)", within, within)
    return phase


async def stream_event_ids(run: EmbeddedRun, stream: str = "KERNELBUS_EVENTS") -> list[str]:
    """The `Kb-Event-Id` of every message in the event stream, in stream order (read as the
    launcher's NATS user: the embedded bus has no anonymous access, kernelbus.natsauth)."""
    import json

    import nats

    from kernelbus.events import EVENT_ID_HEADER

    passwords = json.loads((run.data_dir / "nats" / "credentials.json").read_text())
    nc = await nats.connect(
        f"nats://127.0.0.1:{run.nats_port}",
        connect_timeout=5,
        user="launcher",
        password=passwords["launcher"],
        inbox_prefix="_INBOX_launcher",
    )
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        ids = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            ids.append((msg.headers or {}).get(EVENT_ID_HEADER, f"seq-{seq}"))
        return ids
    finally:
        await nc.close()
