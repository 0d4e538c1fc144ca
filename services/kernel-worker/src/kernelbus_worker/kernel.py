"""One running kernel: its jupyter_client manager, its shared ZMQ sockets, and the traffic
between them and the bus (routing replies, broadcasting iopub, buffering for a reconnect,
tracking activity)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import Session

from kernelbus import subjects
from kernelbus.framing import FrameError, pack_v1, parent_msg_id, unpack_v1
from kernelbus.logs import kernel_logger
from kernelbus.models import KernelRecord
from kernelbus.timefmt import utcnow
from kernelbus_worker.activity import Activity
from kernelbus_worker.outbox import Outbox
from kernelbus_worker.routing import Hold, RecentFrames, ReplayBuffer, RouteTable
from kernelbus_worker.settings import WorkerSettings
from kernelbus_worker.zmqbridge import KernelSockets

log = logging.getLogger(__name__)

HELD_FRAMES_LIMIT = 10_000


class KernelExited(RuntimeError):
    """The kernel process exited before it answered kernel_info."""


@dataclass(frozen=True)
class Attached:
    """One open websocket connection of a kernel, as its api replica announced it."""

    conn_id: str
    session_id: str
    api_instance: str
    attached_at: float


class ManagedKernel:
    """A kernel and its bridge. Lifecycle policy (restarts, capacity) lives in the supervisor."""

    def __init__(
        self,
        record: KernelRecord,
        km: AsyncKernelManager,
        settings: WorkerSettings,
        outbox: Outbox,
        context: zmq.asyncio.Context,
    ) -> None:
        self.context = context
        self.record = record
        self.km = km
        self.settings = settings
        self.outbox = outbox
        self.log = kernel_logger(log, kernel_id=record.id, worker_id=record.worker_id)
        self.sockets: KernelSockets | None = None
        self.routes = RouteTable()
        self.activity = Activity(settings.untracked_types)
        self.connections: dict[str, str] = {}
        self.attached: dict[str, Attached] = {}
        self.recent = RecentFrames(settings.recent_window)
        self._conn_sessions: OrderedDict[str, str] = OrderedDict()
        self.buffer: ReplayBuffer | None = None
        self.hold: Hold | None = None
        self.bus_down = False
        self._catching_up: set[str] = set()
        self.spec_env: dict[str, str] = {}
        self.dirty = True
        self.busy_with_lifecycle = False
        self.readopted = False
        """Taken over from a crashed worker (whose reply routes are gone)."""
        self._pumps: list[asyncio.Task[None]] = []
        self._info_waiters: dict[str, asyncio.Future[None]] = {}
        self._iopub_seen = asyncio.Event()
        self._probes: set[str] = set()
        self._session = Session(key=b"unset-until-the-bridge-opens", username="kernelbus")
        self._iopub_subject = subjects.kernel_iopub(record.id)
        self._iopub_busy = False  # the pump holds a message it has not published yet
        self._iopub_count = 0
        self._held: list[tuple[bytes, str | None]] | None = None
        self._backfilling: list[list[bytes]] | None = None
        self.last_published: str | None = None
        self.iopub_live = asyncio.Event()
        """msg_id of the last kernel iopub message published (what the keeper is acked)."""
        self.consecutive_restarts = 0
        """Automatic restarts since the kernel last stayed up `stable_start_time` seconds."""
        self.up_since = 0.0  # monotonic time the last automatic restart made the kernel ready

    @property
    def id(self) -> str:
        return self.record.id

    # --- bridge ---------------------------------------------------------------------------

    def open_bridge(self) -> None:
        """(Re)connect the shared sockets to the kernel's current ports and start pumping."""
        self.close_bridge()
        info = plain(self.km.get_connection_info())
        self._session = Session(
            key=str(info.get("key", "")).encode(),
            signature_scheme=info.get("signature_scheme", "hmac-sha256"),
            username="kernelbus",
        )
        self.sockets = KernelSockets(self.context, info, self._session)
        self.record.connection_info = info
        loop = asyncio.get_running_loop()
        self._pumps = [loop.create_task(self._pump_iopub())]
        for channel in ("shell", "control", "stdin"):
            self._pumps.append(loop.create_task(self._pump_replies(channel)))

    def close_bridge(self) -> None:
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
        self._observe(parts)
        frame = pack_v1("iopub", parts)
        if self.buffer is not None:
            self.buffer.add(frame)
        elif self.connections:
            self.recent.add(None, frame)
        direct = self.hold is None and not self.bus_down  # else held: not published yet
        await self._send(None, frame)
        if direct:
            self.last_published = _msg_id(parts) or self.last_published

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
            header = json.loads(parts[0])
            parent = json.loads(parts[1]) if len(parts[1]) > 2 else {}
            state = json.loads(parts[3]).get("execution_state")
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
            # died with it: every client of the kernel gets it (clients skip foreign replies).
            await self.outbox.publish(self._iopub_subject, pack_v1(channel, parts))
            return
        if conn_id is None:
            self.log.debug("no route for a %s reply to %s; dropped", channel, parent_id)
            return
        if channel != "stdin" and _msg_type(parts).endswith("_reply"):
            self.routes.forget(parent_id)
        frame = pack_v1(channel, parts)
        target = conn_id if conn_id in self.connections else self._successor(conn_id)
        if target is None and conn_id not in self._conn_sessions:
            # Attached to this kernel's previous worker (this one re-adopted the kernel): the
            # websocket is still open at its api replica, which listens on its subject.
            target = conn_id
        if target is not None:
            self.recent.add(target, frame)
            await self._send(target, frame)
        elif self.buffer is not None and self._conn_sessions.get(conn_id) == self.buffer.session_id:
            self.buffer.add(frame)

    def _successor(self, conn_id: str) -> str | None:
        """The open connection that reconnected with the session of a closed one, if any.

        jupyter_server uses the session_id as the ZMQ identity, so a reply to a request sent
        before a reconnect reaches the new socket of the same session; so here.
        """
        session_id = self._conn_sessions.get(conn_id)
        if session_id is None:
            return None
        for candidate, candidate_session in reversed(self.connections.items()):
            if candidate_session == session_id:
                return candidate
        return None

    def _observe(self, parts: list[bytes]) -> None:
        try:
            header = json.loads(parts[0])
            parent = json.loads(parts[1]) if len(parts[1]) > 2 else {}
            msg_type = header.get("msg_type", "")
            status = json.loads(parts[3]).get("execution_state") if msg_type == "status" else None
        except (ValueError, AttributeError):
            return
        if status == "idle" and parent.get("msg_id") in self._probes:
            self._iopub_seen.set()  # our kernel_info's own statuses came through iopub
        active, changed = self.activity.observe(msg_type, parent.get("msg_type"), status)
        if active:
            self.record.last_activity = utcnow()
            self.dirty = True
        if changed and self.record.execution_state not in ("restarting", "dead"):
            self.record.execution_state = self.activity.execution_state  # type: ignore[assignment]
            self.dirty = True

    # --- client traffic -------------------------------------------------------------------

    async def from_client(self, frame: bytes, conn_id: str | None) -> None:
        """A client message from the bus: check its framing, remember its route, send it."""
        try:
            channel, parts = unpack_v1(frame)
            header = json.loads(parts[0])
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
        if conn_id and self.readopted and conn_id not in self._conn_sessions:
            # A websocket attached to the crashed predecessor, still open at its api replica:
            # known from now on (held for during a bus outage, buffered for when it leaves).
            session = header.get("session") if isinstance(header, dict) else None
            self.attach(conn_id, str(session or f"adopted:{conn_id}"))
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

    def attach(self, conn_id: str, session_id: str, api_instance: str = "") -> list[bytes]:
        """A websocket opened: returns what is owed to its session (JS replay), in order.

        An older connection of the same session is stale (its api replica may have died
        without a detach): it is replaced, as jupyter_server replaces it.
        """
        for stale in self.same_session(session_id):
            if stale.conn_id == conn_id:
                continue  # the same connection again: its api replica is back after an outage
            self.log.info("Replacing stale connection %s of session %s", stale.conn_id, session_id)
            self._forget_connection(stale.conn_id)
            if self.hold is not None and self.hold.waiting_for(stale.conn_id):
                self.hold.transfer(stale.conn_id, conn_id)
        self.connections[conn_id] = session_id
        self.attached[conn_id] = Attached(conn_id, session_id, api_instance, time.monotonic())
        self._conn_sessions[conn_id] = session_id
        while len(self._conn_sessions) > 1000:
            self._conn_sessions.popitem(last=False)
        owed: list[bytes] = []
        if self.buffer is not None:
            if self.buffer.session_id == session_id:
                owed = self.buffer.drain()
                self.log.info("Replaying %d buffered messages", len(owed))
            else:
                self.log.info(
                    "Discarding %d buffered messages for %s",
                    len(self.buffer),
                    self.buffer.session_id,
                )
            self.buffer = None
        return owed

    def detach(self, conn_id: str) -> None:
        """A websocket closed; the last one to close starts buffering for its session."""
        owed = self.hold.abandon(conn_id) if self.hold is not None else []
        session_id = self._forget_connection(conn_id)
        if session_id is not None and not self.connections:
            self._start_buffering(session_id)
            if self.buffer is not None:
                for frame in owed:
                    self.buffer.add(frame)
        self._end_hold_if_done()

    def drop_lost(self, conn_ids: list[str], since: float) -> None:
        """Connections whose api replica died: detach them, and if none is left, owe their
        session what was sent to them since `since` (the api's last sign of life)."""
        sessions = [s for s in map(self._forget_connection, conn_ids) if s is not None]
        if not sessions or self.connections:
            return
        self._start_buffering(sessions[-1])
        if self.buffer is not None:
            lost = set(conn_ids)
            for at, target, frame in self.recent.since(since):
                if target is None or target in lost:
                    self.buffer.add(frame, now=at)

    def _forget_connection(self, conn_id: str) -> str | None:
        self.attached.pop(conn_id, None)
        return self.connections.pop(conn_id, None)

    def same_session(self, session_id: str) -> list[Attached]:
        """Open connections of `session_id` (a new one of the session will replace them).

        An empty session_id names no session: such connections never replace each other.
        """
        if not session_id:
            return []
        return [a for a in self.attached.values() if a.session_id == session_id]

    def sent_to(self, conn_id: str, since: float) -> list[bytes]:
        """Frames sent to `conn_id` (or to every connection) since `since`, in order."""
        return [f for _, t, f in self.recent.since(since) if t is None or t == conn_id]

    def _start_buffering(self, session_id: str) -> None:
        if self.settings.replay_window <= 0:
            return
        self.buffer = ReplayBuffer(
            session_id,
            self.settings.replay_max_messages,
            self.settings.replay_max_bytes,
            self.settings.replay_window,
        )

    # --- readiness and generated messages -------------------------------------------------

    async def wait_ready(self, timeout: float) -> None:
        """Until the kernel answered kernel_info on shell and that request's `idle` status came
        through our iopub subscription: the bridge is live both ways and the state is known.
        (Any iopub message is not enough: an `iopub_welcome` can precede a subscription that
        missed the kernel_info statuses.)"""
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
                return
            if not await self.km.is_alive():
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

    def relabel(self, record: KernelRecord) -> None:
        """Give a pre-started (pooled) kernel the identity a client asked for."""
        self.record = record
        self.km.kernel_id = record.id
        self._iopub_subject = subjects.kernel_iopub(record.id)
        self.log = kernel_logger(log, kernel_id=record.id, worker_id=record.worker_id)

    async def publish_status(self, state: str) -> None:
        """An iopub status the worker generates (`restarting`, `dead`): empty parent_header."""
        msg = self._session.msg("status", content={"execution_state": state})
        frame = pack_v1("iopub", self._parts(msg))
        if self.buffer is not None:
            self.buffer.add(frame)
        await self._send(None, frame)

    # --- NATS outages ---------------------------------------------------------------------

    async def _send(self, target: str | None, frame: bytes) -> None:
        """Publish to one connection (`target`) or to every one (None: iopub), or hold it.

        While a hold is on, output is kept for the connections it waits for, and sent
        directly (on their own subject, in order) to those already caught up. With the bus
        down and nobody connected nothing is published: a replay buffer, if any, has it.
        """
        if self.hold is not None:
            self.hold.add(target, frame)
            if not self.bus_down:
                for conn_id in list(self.connections):
                    if not self.hold.waiting_for(conn_id) and target in (None, conn_id):
                        await self._publish(subjects.connection(conn_id), frame)
            return
        if self.bus_down:
            return
        subject = self._iopub_subject if target is None else subjects.connection(target)
        await self._publish(subject, frame)

    async def _publish(self, subject: str, frame: bytes) -> None:
        try:
            await self.outbox.publish(subject, frame)
        except Exception as exc:  # never let a bus error stop a pump
            self.log.warning("could not publish to %s: %s", subject, exc)

    def bus_lost(self, since: dict[str, float]) -> None:
        """The bus went down: hold output for every open connection, seeded with what was sent
        to it since its api replica last proved it had received everything (`since`, per
        conn_id, monotonic). The api drops what it already delivered (by msg_id)."""
        self.bus_down = True
        if not self.connections:
            return
        if self.hold is None:
            self.hold = Hold({}, self.settings.replay_max_messages, self.settings.replay_max_bytes)
            seed_from = min(since.get(c, 0.0) for c in self.connections)
            for _, target, frame in self.recent.since(seed_from):
                self.hold.add(target, frame)
            start = 0
        else:
            start = self.hold.end
        for conn_id in self.connections:
            self.hold.cursors.setdefault(conn_id, start)
        self.log.warning(
            "bus down: holding output for %d connections (%d recent messages kept)",
            len(self.connections),
            len(self.hold.frames),
        )

    def bus_back(self) -> None:
        self.bus_down = False
        self._end_hold_if_done()

    def begin_catch_up(self, conn_id: str) -> bool:
        """Claim the one catch-up of `conn_id` now (False if one runs): from here on its hold
        is not expired, even before `catch_up(conn_id, begun=True)` sends anything."""
        if conn_id in self._catching_up:
            return False
        self._catching_up.add(conn_id)
        return True

    async def catch_up(self, conn_id: str, begun: bool = False) -> int:
        """Send a re-attached connection what was held for it, in order; then it is live.

        One catch-up per connection at a time: the worker (after its own reconnect) and the
        api replica (re-attaching after its reconnect) may both start one, and two loops
        taking turns would interleave their batches out of order."""
        if not begun and not self.begin_catch_up(conn_id):
            return 0
        sent = 0
        try:
            while self.hold is not None and self.hold.waiting_for(conn_id) and not self.bus_down:
                frames = self.hold.take(conn_id)
                if not frames:  # nothing new since the last take: release with no await between
                    self.hold.release(conn_id)
                    self._end_hold_if_done()
                    break
                for frame in frames:
                    await self._publish(subjects.connection(conn_id), frame)
                sent += len(frames)
        finally:
            self._catching_up.discard(conn_id)
        if sent:
            self.log.info("sent %d messages held during the bus outage to %s", sent, conn_id)
        return sent

    def resume_for(self, conn_id: str, since: float) -> None:
        """Its api replica re-attached `conn_id` after that replica's own reconnect, while this
        worker stayed connected (in a NATS cluster one node's loss cuts off only the clients
        on it): what was published to it meanwhile found no subscriber. Hold output for it,
        seeded with what was sent to it since `since` (its replica's last ping answer), so
        that `catch_up` resends that in order before it goes live again; the api drops what
        it already delivered (by msg_id)."""
        if conn_id not in self.connections or self.waiting_for(conn_id):
            return
        if self.hold is None:
            self.hold = Hold({}, self.settings.replay_max_messages, self.settings.replay_max_bytes)
        self.hold.cursors[conn_id] = self.hold.end
        for frame in self.sent_to(conn_id, since):
            self.hold.add(conn_id, frame)

    def expire_hold(self) -> None:
        """Connections not re-attached since the bus came back: their replica is gone. Their
        session is owed what was held, as for a replica lost otherwise (ADR 0008)."""
        hold = self.hold
        if hold is None or self.bus_down:
            return
        for conn_id in list(hold.cursors):
            if conn_id in self._catching_up:
                continue  # it came back and is being sent its share right now
            owed = hold.abandon(conn_id)
            session_id = self._forget_connection(conn_id)
            self.log.warning("connection %s did not come back after the bus outage", conn_id)
            if session_id is not None and not self.connections:
                self._start_buffering(session_id)
                if self.buffer is not None:
                    for frame in owed:
                        self.buffer.add(frame)
        if hold.dropped:
            self.log.warning("%d held messages were dropped (hold limits)", hold.dropped)
        if not hold.waiting:
            self.hold = None

    def _end_hold_if_done(self) -> None:
        if self.hold is not None and not self.hold.waiting and not self.bus_down:
            self.hold = None

    def waiting_for(self, conn_id: str) -> bool:
        return self.hold is not None and self.hold.waiting_for(conn_id)

    def _parts(self, msg: dict[str, Any]) -> list[bytes]:
        pack = self._session.pack
        return [
            pack(msg["header"]),
            pack(msg["parent_header"]),
            pack(msg["metadata"]),
            pack(msg["content"]),
        ]


def _msg_id(parts: list[bytes]) -> str:
    try:
        header = json.loads(parts[0])
    except ValueError:
        return ""
    return str(header.get("msg_id", "")) if isinstance(header, dict) else ""


def _msg_type(parts: list[bytes]) -> str:
    try:
        return str(json.loads(parts[0]).get("msg_type", ""))
    except ValueError:
        return ""


def plain(value: Any) -> Any:
    """Connection/provisioner info as JSON-safe values (the HMAC key arrives as bytes)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
