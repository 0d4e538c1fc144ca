"""A kernel's traffic between its shared ZMQ sockets and the bus: the pumps (iopub to every
client, replies to the client that asked), client messages to the kernel (held while a
restart replaces the sockets), the readiness probe, and the backfill of what the iopub
keeper kept (ADR 0014). Where a frame goes is the connection table's call; this module
publishes it. Nothing here knows the kernel's record or its process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import zmq.asyncio
from jupyter_client.session import Session

from kernelbus import fastjson, subjects
from kernelbus.framing import FrameError, pack_v1, parent_msg_id, unpack_v1
from kernelbus_worker.activity import Activity
from kernelbus_worker.connections import ConnectionTable, Log
from kernelbus_worker.outbox import Outbox
from kernelbus_worker.routing import RouteTable
from kernelbus_worker.zmqbridge import KernelSockets

HELD_FRAMES_LIMIT = 10_000


class KernelExited(RuntimeError):
    """The kernel process exited before it answered kernel_info."""


class KernelBridge:
    """The sockets of one kernel and the pumps between them and the bus.

    `observed(active, changed)` is called for an iopub message that counts as activity
    (`active`) or changed the execution state (`changed`): the kernel updates its record.
    """

    def __init__(
        self,
        context: zmq.asyncio.Context,
        outbox: Outbox,
        connections: ConnectionTable,
        activity: Activity,
        observed: Callable[[bool, bool], None],
        kernel_id: str,
        log: Log,
    ) -> None:
        self.context = context
        self.outbox = outbox
        self.connections = connections
        self.activity = activity
        self.log = log
        self.sockets: KernelSockets | None = None
        self.routes = RouteTable()
        self.readopted = False
        """Taken over from a crashed worker (whose reply routes are gone)."""
        self._observed = observed
        self._pumps: list[asyncio.Task[None]] = []
        self._info_waiters: dict[str, asyncio.Future[None]] = {}
        self._iopub_seen = asyncio.Event()
        self._probes: set[str] = set()
        self._session = Session(key=b"unset-until-the-bridge-opens", username="kernelbus")
        self._iopub_subject = subjects.kernel_iopub(kernel_id)
        self._iopub_busy = False  # the pump holds a message it has not published yet
        self._iopub_count = 0
        self._held: list[tuple[bytes, str | None]] | None = None
        self._backfilling: list[list[bytes]] | None = None
        self.last_published: str | None = None
        """msg_id of the last kernel iopub message published (what the keeper is acked)."""
        self.iopub_live = asyncio.Event()

    def relabel(self, kernel_id: str, log: Log) -> None:
        """A pooled kernel got the identity a client asked for."""
        self._iopub_subject = subjects.kernel_iopub(kernel_id)
        self.log = log
        self.connections.log = log

    # --- sockets and pumps ----------------------------------------------------------------

    def open(self, info: dict[str, Any]) -> None:
        """(Re)connect the shared sockets to the kernel's ports in `info` and start pumping."""
        self.close()
        self._session = Session(
            key=str(info.get("key", "")).encode(),
            signature_scheme=info.get("signature_scheme", "hmac-sha256"),
            username="kernelbus",
        )
        self.sockets = KernelSockets(self.context, info, self._session)
        loop = asyncio.get_running_loop()
        self._pumps = [loop.create_task(self._pump_iopub())]
        for channel in ("shell", "control", "stdin"):
            self._pumps.append(loop.create_task(self._pump_replies(channel)))

    def close(self) -> None:
        self._backfilling = None
        for task in self._pumps:
            task.cancel()
        self._pumps = []
        if self.sockets is not None:
            self.sockets.close()
            self.sockets = None

    async def _pump_iopub(self) -> None:
        assert self.sockets is not None
        sockets = self.sockets
        while True:
            parts = await sockets.recv("iopub")
            if self._backfilling is not None:
                self._note_probe(parts)
                self._backfilling.append(parts)
                self.iopub_live.set()
                continue
            self._iopub_busy = True
            self._iopub_count += 1
            self.iopub_live.set()
            try:
                await self._deliver_iopub(parts)
            finally:
                self._iopub_busy = False

    async def _deliver_iopub(self, parts: list[bytes]) -> None:
        """One iopub message from the kernel to its clients (replay buffer, recent, bus)."""
        msg_id = self._observe(parts)
        frame = pack_v1("iopub", parts)
        table = self.connections
        table.note_iopub(frame)
        direct = table.hold is None and not table.bus_down  # else held: not published yet
        await self._send(None, frame)
        if direct:
            self.last_published = msg_id or self.last_published

    def hold_iopub_for_backfill(self) -> None:
        """Until `backfill`, live iopub is kept (and only checked for readiness probes): what
        the iopub keeper kept from before this bridge connected goes out first. `iopub_live`
        is set at the first live message: from then on nothing published can miss both."""
        self._backfilling = []
        self.iopub_live.clear()

    async def backfill(self, earlier: list[list[bytes]]) -> int:
        """Deliver `earlier` (the keeper's frames, in order) minus what came in live, then the
        live ones held meanwhile; from then on the pump delivers directly. Returns how many
        of `earlier` were delivered."""
        held = self._backfilling or []
        live = {_msg_id(parts) for parts in held}
        missed = [parts for parts in earlier if _msg_id(parts) not in live]
        self._iopub_busy = True
        try:
            for parts in missed:
                await self._deliver_iopub(parts)
            while self._backfilling:
                await self._deliver_iopub(self._backfilling.pop(0))
            self._backfilling = None  # empty: no await since the check, nothing can slip by
        finally:
            self._iopub_busy = False
        return len(missed)

    def _note_probe(self, parts: list[bytes]) -> None:
        try:
            header = fastjson.loads(parts[0])
            parent = fastjson.loads(parts[1]) if len(parts[1]) > 2 else {}
            state = fastjson.loads(parts[3]).get("execution_state")
        except (ValueError, AttributeError):
            return
        probe = parent.get("msg_id") in self._probes
        if header.get("msg_type") == "status" and state == "idle" and probe:
            self._iopub_seen.set()

    async def drain_iopub(self, quiet: float = 0.05, limit: float = 2.0) -> None:
        """Until the iopub pump has passed on everything the kernel had sent (no message
        queued or in hand for `quiet` seconds; `limit` at most), so that a status published
        next (`restarting`, `dead`) comes after the kernel's last output, as clients expect."""
        sockets = self.sockets
        if sockets is None or not self._pumps:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        seen, quiet_since = self._iopub_count, loop.time()
        while loop.time() < deadline:
            await asyncio.sleep(0.01)
            if self._iopub_busy or self._iopub_count != seen or sockets.pending("iopub"):
                seen, quiet_since = self._iopub_count, loop.time()
            elif loop.time() - quiet_since >= quiet:
                return
        self.log.warning("iopub still busy after %.1f s; publishing the status anyway", limit)

    async def _pump_replies(self, channel: str) -> None:
        assert self.sockets is not None
        sockets = self.sockets
        while True:
            parts = await sockets.recv(channel)
            parent_id = parent_msg_id(parts)
            waiter = self._info_waiters.pop(parent_id or "", None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(None)
                continue
            await self._route_reply(channel, parts, parent_id)

    async def _route_reply(self, channel: str, parts: list[bytes], parent_id: str | None) -> None:
        conn_id = self.routes.lookup(parent_id)
        if conn_id is None and self.readopted and channel != "stdin":
            # A reply to a request sent through this kernel's previous worker, whose routes
            # died with it: every client of the kernel gets it (clients skip foreign replies),
            # kept and held as iopub output is, so that a session with nobody attached right
            # now (its api replica died too) is sent it when it comes back.
            frame = pack_v1(channel, parts)
            self.connections.note_iopub(frame)
            await self._send(None, frame)
            return
        if conn_id is None:
            self.log.debug("no route for a %s reply to %s; dropped", channel, parent_id)
            return
        if channel != "stdin" and _msg_type(parts).endswith("_reply"):
            self.routes.forget(parent_id)
        frame = pack_v1(channel, parts)
        target = self.connections.reply_target(conn_id, frame)
        if target is not None:
            await self._send(target, frame)

    def _observe(self, parts: list[bytes]) -> str:
        """Activity and execution state from an iopub message; returns its msg_id ("" if its
        header is not a JSON object): each part is parsed once on this path."""
        try:
            header = fastjson.loads(parts[0])
            parent = fastjson.loads(parts[1]) if len(parts[1]) > 2 else {}
            msg_type = header.get("msg_type", "")
            status = (
                fastjson.loads(parts[3]).get("execution_state") if msg_type == "status" else None
            )
        except (ValueError, AttributeError):
            return _msg_id(parts)
        if status == "idle" and parent.get("msg_id") in self._probes:
            self._iopub_seen.set()  # our kernel_info's own statuses came through iopub
        active, changed = self.activity.observe(msg_type, parent.get("msg_type"), status)
        if active or changed:
            self._observed(active, changed)
        return str(header.get("msg_id", ""))

    # --- client traffic -------------------------------------------------------------------

    async def from_client(self, frame: bytes, conn_id: str | None) -> None:
        """A client message from the bus: check its framing, remember its route, send it."""
        try:
            channel, parts = unpack_v1(frame)
            header = fastjson.loads(parts[0])
            msg_id = header["msg_id"]
        except (FrameError, ValueError, KeyError, TypeError) as exc:
            self.log.warning("dropped a malformed client message: %s", exc)
            return
        if channel == "iopub":
            return
        if self._held is not None:
            self._hold(frame, conn_id)
            return
        if self.sockets is None:
            return
        if conn_id and self.readopted and not self.connections.knows(conn_id):
            # A websocket attached to the crashed predecessor, still open at its api replica:
            # known from now on (held for during a bus outage, buffered for when it leaves).
            session = header.get("session") if isinstance(header, dict) else None
            self.connections.attach(conn_id, str(session or f"adopted:{conn_id}"))
        if conn_id and channel != "stdin":
            self.routes.remember(str(msg_id), conn_id)
        await self.sockets.send(channel, parts)

    def hold_client_frames(self) -> None:
        """From now until `release_client_frames`, client messages wait instead of going to
        sockets that a restart is about to replace (a reconnecting client's kernel_info)."""
        if self._held is None:
            self._held = []

    def _hold(self, frame: bytes, conn_id: str | None) -> None:
        assert self._held is not None
        if len(self._held) >= HELD_FRAMES_LIMIT:
            self.log.warning("more than %d client messages held; dropped one", HELD_FRAMES_LIMIT)
            return
        self._held.append((frame, conn_id))

    async def release_client_frames(self, deliver: bool) -> None:
        """Send the held client messages to the (new) sockets, or drop them (the kernel died)."""
        held, self._held = self._held or [], None
        if held and not deliver:
            self.log.warning("dropped %d client messages held for a failed restart", len(held))
            return
        if held:
            self.log.info("delivering %d client messages held during the restart", len(held))
        for frame, conn_id in held:
            await self.from_client(frame, conn_id)

    # --- readiness and generated messages -------------------------------------------------

    async def wait_ready(self, timeout: float, alive: Callable[[], Awaitable[bool]]) -> None:
        """Until the kernel answered kernel_info on shell and that request's `idle` status came
        through our iopub subscription: the bridge is live both ways and the state is known.
        (Any iopub message is not enough: an `iopub_welcome` can precede a subscription that
        missed the kernel_info statuses.) Raises KernelExited when `alive()` says the process
        is gone, TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        self._iopub_seen.clear()
        self._probes.clear()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("kernel did not answer kernel_info in time")
            replied = await self._kernel_info_round(min(1.0, remaining))
            if replied and self._iopub_seen.is_set():
                self._probes.clear()
                assert self.sockets is not None
                late = await self.sockets.handshakes(max(0.0, deadline - time.monotonic()))
                if late:
                    self.log.warning("no ZMQ handshake on %s yet; going on", ", ".join(late))
                return
            if not await alive():
                raise KernelExited("kernel process exited during start")

    async def _kernel_info_round(self, wait: float) -> bool:
        assert self.sockets is not None
        msg = self._session.msg("kernel_info_request")
        waiter = asyncio.get_running_loop().create_future()
        self._info_waiters[msg["header"]["msg_id"]] = waiter
        self._probes.add(msg["header"]["msg_id"])
        await self.sockets.send("shell", self._parts(msg))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), wait)
            if not self._iopub_seen.is_set():
                # Replied, but our subscription may have joined after this probe's statuses
                # went out (slow joiner): probe again soon rather than wait out a full round.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._iopub_seen.wait(), min(0.1, wait))
            return True
        except TimeoutError:
            return False

    async def run_silently(self, code: str, timeout: float) -> None:
        """Execute `code` as the worker (silent, no history); its reply goes to no client."""
        assert self.sockets is not None
        content = {"code": code, "silent": True, "store_history": False, "allow_stdin": False}
        msg = self._session.msg("execute_request", content=content)
        waiter = asyncio.get_running_loop().create_future()
        self._info_waiters[msg["header"]["msg_id"]] = waiter
        await self.sockets.send("shell", self._parts(msg))
        await asyncio.wait_for(waiter, timeout)

    async def publish_status(self, state: str) -> None:
        """An iopub status the worker generates (`restarting`, `dead`): empty parent_header."""
        msg = self._session.msg("status", content={"execution_state": state})
        frame = pack_v1("iopub", self._parts(msg))
        self.connections.note_generated(frame)
        await self._send(None, frame)

    def _parts(self, msg: dict[str, Any]) -> list[bytes]:
        pack = self._session.pack
        return [
            pack(msg["header"]),
            pack(msg["parent_header"]),
            pack(msg["metadata"]),
            pack(msg["content"]),
        ]

    # --- publishing -------------------------------------------------------------------------

    async def _send(self, target: str | None, frame: bytes) -> None:
        """Publish to one connection (`target`) or to every one (None: iopub), or hold it.

        While a hold is on, output is kept for the connections it waits for, and sent
        directly (on their own subject, in order) to those already caught up. With the bus
        down and nobody connected nothing is published: a replay buffer, if any, has it.
        """
        table = self.connections
        if table.hold is not None:
            for conn_id in table.hold_frame(target, frame):
                await self._publish(subjects.connection(conn_id), frame)
            return
        if table.bus_down:
            return
        subject = self._iopub_subject if target is None else subjects.connection(target)
        await self._publish(subject, frame)

    async def _publish(self, subject: str, frame: bytes) -> None:
        try:
            await self.outbox.publish(subject, frame)
        except Exception as exc:  # never let a bus error stop a pump
            self.log.warning("could not publish to %s: %s", subject, exc)

    async def catch_up(self, conn_id: str, begun: bool = False) -> int:
        """Send a re-attached connection what was held for it, in order; then it is live.
        Returns how many messages were sent (0 too when another catch-up of it runs).
        `begun`: the caller claimed it already (`ConnectionTable.begin_catch_up`)."""
        table = self.connections
        if not begun and not table.begin_catch_up(conn_id):
            return 0
        sent = 0
        try:
            while frames := table.catch_up_batch(conn_id):
                for frame in frames:
                    await self._publish(subjects.connection(conn_id), frame)
                sent += len(frames)
        finally:
            table.end_catch_up(conn_id)
        if sent:
            self.log.info("sent %d messages held during the bus outage to %s", sent, conn_id)
        return sent


def _msg_id(parts: list[bytes]) -> str:
    try:
        header = fastjson.loads(parts[0])
    except ValueError:
        return ""
    return str(header.get("msg_id", "")) if isinstance(header, dict) else ""


def _msg_type(parts: list[bytes]) -> str:
    try:
        return str(fastjson.loads(parts[0]).get("msg_type", ""))
    except ValueError:
        return ""
