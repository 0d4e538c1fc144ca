"""This api replica's kernel websockets: subscriptions, attach/detach, stale-session
replacement and connection counts. One hub per app, created and closed by the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import cast

from starlette.types import ASGIApp

from kernelbus import bus, subjects
from kernelbus.bus_types import Msg, Subscription
from kernelbus.errors import KernelbusError, NoSuchKernel
from kernelbus.messages import AttachConnection, AttachReply, DetachConnection
from kernelbus.tasks import cancel_and_wait
from kernelbus_api.channels import undelivered
from kernelbus_api.channels.connection import Connection, SeenIds
from kernelbus_api.channels.counts import ConnectionCounts
from kernelbus_api.channels.feeds import KernelFeeds
from kernelbus_api.state import AppState

log = logging.getLogger(__name__)

REATTACH_FOR = 30.0
"""Seconds a websocket waits after a NATS outage for its kernel's worker to answer again;
then it is closed with 1012 (service restart), which clients answer by reconnecting."""
SEEN_KEPT_FOR = 120.0
"""Seconds the msg_ids a closed websocket delivered are kept for its session's next one."""
MAX_SEEN_SESSIONS = 1000
MAX_HELD_INPUT = 1000
"""Client messages kept per websocket while the bus is down; beyond, it is closed (1013)."""


@dataclass
class Hub:
    state: AppState
    feeds: KernelFeeds
    counts: ConnectionCounts
    sessions: dict[str, Connection] = field(default_factory=dict)
    _subs: dict[str, Subscription] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    open_connections: set[Connection] = field(default_factory=set)
    _seen_by_session: dict[str, tuple[float, SeenIds]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _reattaching: set[str] = field(default_factory=set)
    _undelivered: Subscription | None = None

    @classmethod
    def create(cls, state: AppState) -> Hub:
        counts = ConnectionCounts(state.registry, state.settings.api_instance)
        hub = cls(state, KernelFeeds(state.nc), counts)
        state.connectivity.on_disconnected.append(hub.bus_lost)
        state.connectivity.on_reconnected.append(hub.bus_back)
        return hub

    async def start(self) -> None:
        """Listen for NATS's word that a client message reached no worker (`undelivered`)."""
        prefix = subjects.undelivered_input(self.state.settings.api_instance)
        self._undelivered = await self.state.nc.subscribe(f"{prefix}.>", cb=self._on_undelivered)

    async def aclose(self) -> None:
        """Stop what the hub runs on its own: re-attaches after an outage, the count refresh."""
        await cancel_and_wait(*self._tasks)
        await self.counts.aclose()

    # --- NATS outages -----------------------------------------------------------------------

    async def bus_lost(self) -> None:
        """Hold client input: published now it could reach NATS before the worker
        re-subscribed, and be lost."""
        for conn in self.open_connections:
            if conn.held_input is None:
                conn.held_input = []

    async def bus_back(self) -> None:
        """Re-attach every open websocket (nats-py re-created the subscriptions): the worker
        then sends what it held for it during the outage, and held input goes out."""
        for conn in list(self.open_connections):
            self._start_reattach(conn)

    def reattach(self, conn_ids: list[str]) -> None:
        """A worker back from its own reconnect holds output for these connections: those
        still open here are re-attached (the worker then sends what it held)."""
        wanted = set(conn_ids)
        for conn in list(self.open_connections):
            if conn.conn_id in wanted and conn.conn_id not in self._reattaching:
                self._start_reattach(conn)

    def reattach_kernels(self, kernel_ids: list[str]) -> None:
        """A worker re-adopted these kernels from a crashed one: every websocket open here on
        them is re-attached, so that it knows them (and keeps their output if this replica
        dies too)."""
        wanted = set(kernel_ids)
        for conn in list(self.open_connections):
            if conn.kernel_id in wanted and conn.conn_id not in self._reattaching:
                self._start_reattach(conn)

    def _start_reattach(self, conn: Connection) -> None:
        task = asyncio.create_task(self._reattach(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reattach(self, conn: Connection) -> None:
        self._reattaching.add(conn.conn_id)
        if conn.held_input is None:
            # New input waits: what the worker says it never received goes out before it.
            conn.held_input = []
        try:
            await self._reattach_once(conn)
        finally:
            self._reattaching.discard(conn.conn_id)

    async def _reattach_once(self, conn: Connection) -> None:
        deadline = asyncio.get_running_loop().time() + REATTACH_FOR
        while not conn.closing and conn in self.open_connections:
            if not self.state.connectivity.connected:
                return  # down again: the next reconnect re-attaches
            try:
                reply = await self._attach(conn)
            except NoSuchKernel:
                conn.log.warning("kernel gone after the bus outage; closing")
                conn.close_soon(1011, "kernel is gone")
                return
            except KernelbusError as exc:
                if asyncio.get_running_loop().time() > deadline:
                    conn.log.warning("no re-attach after the bus outage (%s); closing", exc)
                    conn.close_soon(1012, "service restart")
                    return
                await asyncio.sleep(0.25)
                continue
            conn.log.info("websocket re-attached after the bus outage")
            self._hold_missing(conn, reply.inputs_missing)
            await self._release_input(conn)
            if conn.held_input is None:
                return
            # NATS returned a message released just now: its worker went away again.

    def _hold_missing(self, conn: Connection, missing: list[int]) -> None:
        """Hold again what the worker says never arrived (ADR 0024): it goes out in order."""
        taken = [(seq, conn.sent.undelivered(seq)) for seq in missing]
        again = [(seq, frame) for seq, frame in taken if frame is not None]
        if again:
            conn.log.warning("%d client messages never reached the worker: sent again", len(again))
        for item in again:
            self._hold(conn, item)

    async def _release_input(self, conn: Connection) -> None:
        held, conn.held_input = conn.held_input or [], None
        for seq, frame in held:
            await self.publish(conn, frame, seq)

    async def open(self, conn: Connection) -> None:
        """Subscribe, flush, then attach: the attach reply proves the worker's side is live.

        Raises the typed error of a failed attach, with nothing left subscribed.
        """
        self._inherit_seen(conn)
        self._replace_stale(conn)
        async with self._lock:
            self._subs[conn.conn_id] = await self.state.nc.subscribe(
                subjects.connection(conn.conn_id), cb=conn.on_bus_msg
            )
            await self.feeds.join(conn)
        try:
            await bus.flush(self.state.nc, bus.FLUSH_TIMEOUT)
            reply = await self._attach(conn)
        except BaseException:  # nothing stays subscribed for a connection that never opened
            await self._unsubscribe(conn)
            raise
        conn.went_live(reply.replayed)
        self.open_connections.add(conn)
        await self.counts.add(conn.kernel_id)
        conn.log.info("websocket attached (replayed %s)", reply.replayed)

    async def close(self, conn: Connection) -> None:
        """Detach (the worker starts buffering if it was the last), then unsubscribe.

        Never raises: during shutdown NATS may already be draining, and the worker may be gone.
        """
        self.open_connections.discard(conn)
        self._keep_seen(conn)
        await self.counts.remove(conn.kernel_id)
        try:
            await self._detach(conn)
        except Exception as exc:
            conn.log.warning("detach failed: %s", exc)
        try:
            await self._unsubscribe(conn)
        except Exception as exc:
            conn.log.warning("unsubscribe failed: %s", exc)

    async def publish(self, conn: Connection, frame: bytes, seq: int | None = None) -> None:
        """A client message (its bus frame) to the kernel; replies come back on
        `kb.conn.<conn_id>`, which its reply subject names (`subjects.input_reply`).

        Held while the bus is down or the connection re-attaches after an outage, or after
        NATS said an earlier one reached no worker (`undelivered`).
        """
        seq = conn.sent.next_seq() if seq is None else seq
        if conn.held_input is not None:
            self._hold(conn, (seq, frame))
            return
        conn.sent.sent(seq, frame)
        subject = subjects.kernel_input(conn.kernel_id)
        reply = subjects.input_reply(self.state.settings.api_instance, conn.conn_id, seq)
        await bus.publish_frame(self.state.nc, subject, frame, reply)

    def _hold(self, conn: Connection, item: undelivered.Held) -> None:
        held = conn.held_input if conn.held_input is not None else []
        conn.held_input = held
        if len(held) >= MAX_HELD_INPUT:
            conn.log.warning("too many client messages held for the worker; closing")
            conn.close_soon(1013, "message bus unavailable")
            return
        undelivered.hold(held, item)

    async def _on_undelivered(self, msg: Msg) -> None:
        """NATS's 503 for a client message no worker received: hold it, re-attach, resend."""
        if not undelivered.no_responders(msg.headers):
            return
        parsed = undelivered.parse_reply_subject(self.state.settings.api_instance, msg.subject)
        conn = self._by_id(parsed[0]) if parsed else None
        if parsed is None or conn is None or conn.closing:
            log.warning("a client message reached no worker, and its websocket is gone")
            return
        taken = conn.sent.undelivered(parsed[1])
        if taken is None:
            if conn.sent.forgotten(parsed[1]):
                conn.log.warning("a client message reached no worker and was no longer kept")
            return  # another chunk of a message already taken back
        conn.log.warning("a client message reached no worker; held until one answers")
        self._hold(conn, (parsed[1], taken))
        if conn.conn_id not in self._reattaching:
            self._start_reattach(conn)

    def _by_id(self, conn_id: str) -> Connection | None:
        for conn in self.open_connections:
            if conn.conn_id == conn_id:
                return conn
        return None

    def _keep_seen(self, conn: Connection) -> None:
        now = time.monotonic()
        self._seen_by_session[conn.session_key] = (now, conn.seen)
        for key, (at, _) in list(self._seen_by_session.items()):
            if now - at > SEEN_KEPT_FOR or len(self._seen_by_session) > MAX_SEEN_SESSIONS:
                del self._seen_by_session[key]

    def _inherit_seen(self, conn: Connection) -> None:
        """What the session's previous websocket on this replica delivered is not resent
        (the worker may resend it after a bus outage, not knowing what arrived)."""
        kept = self._seen_by_session.pop(conn.session_key, None)
        stale = self.sessions.get(conn.session_key)
        if stale is not None:
            conn.seen = stale.seen
        elif kept is not None and time.monotonic() - kept[0] <= SEEN_KEPT_FOR:
            conn.seen = kept[1]

    def _replace_stale(self, conn: Connection) -> None:
        stale = self.sessions.get(conn.session_key)
        if stale is not None:
            stale.log.warning("Replacing stale connection %s", conn.session_key)
            stale.close_soon(1000, "replaced by a new connection")
        self.sessions[conn.session_key] = conn

    async def _attach(self, conn: Connection) -> AttachReply:
        message = AttachConnection(
            kernel_id=conn.kernel_id,
            conn_id=conn.conn_id,
            session_id=conn.session_id,
            api_instance=self.state.settings.api_instance,
            inputs_sent=conn.sent.given,
            inputs_kept=conn.sent.kept(),
        )
        subject = subjects.kernel_attach(conn.kernel_id)
        timeout = self.state.settings.request_timeout
        return await bus.request(self.state.nc, subject, message, timeout, AttachReply)

    async def _detach(self, conn: Connection) -> None:
        message = DetachConnection(kernel_id=conn.kernel_id, conn_id=conn.conn_id)
        subject = subjects.kernel_attach(conn.kernel_id)
        await bus.request(self.state.nc, subject, message, self.state.settings.request_timeout)

    async def _unsubscribe(self, conn: Connection) -> None:
        if self.sessions.get(conn.session_key) is conn:
            del self.sessions[conn.session_key]
        async with self._lock:
            await self.feeds.leave(conn)
            sub = self._subs.pop(conn.conn_id, None)
            if sub is not None:
                await sub.unsubscribe()


def hub_of(app: ASGIApp) -> Hub:
    """The app's hub, created with the app state in the lifespan."""
    return cast(Hub, app.state.kb_channels)  # type: ignore[attr-defined]
