"""The websocket connections of one kernel and what each is owed: who is attached, which
session a connection belonged to, the replay buffer of a session with nobody attached, the
hold kept during a bus outage, and what was sent lately. Pure logic: no sockets, no bus;
the bridge asks it where a frame goes and publishes it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from kernelbus_worker.routing import Hold, RecentFrames, ReplayBuffer

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]

ANY_SESSION = "\x00any"
"""The session of a replay buffer a re-adopted kernel keeps until its first attach: its
predecessor's connections are not known here, so whichever comes first is owed it."""

SESSION_HISTORY = 1000
"""How many conn_id -> session_id pairs are remembered (also after a detach), so that a
reply to a request of a closed connection still finds its session's new connection."""


@dataclass(frozen=True)
class Attached:
    """One open websocket connection of a kernel, as its api replica announced it."""

    conn_id: str
    session_id: str
    api_instance: str
    attached_at: float


@dataclass(frozen=True)
class Limits:
    """Replay buffer and hold bounds (`replay_window` <= 0: no replay buffer) and how long
    sent frames are kept for a lost replica's clients."""

    replay_window: float
    replay_max_messages: int
    replay_max_bytes: int
    recent_window: float


class ConnectionTable:
    """Attach/detach, replay buffers and bus-outage holds of one kernel.

    Invariant, kept by the methods of this class only (`check` states it):
    - `attached` holds the open connections, in the order they attached;
    - every open connection's session is also in the session history (`_sessions`, bounded,
      outliving a detach), with the same session_id (while at most SESSION_HISTORY are open);
    - a replay buffer exists only while no connection is open (the next attach drains or
      discards it);
    - a hold exists only while the bus is down or a connection still waits for its share.
    """

    def __init__(self, limits: Limits, log: Log) -> None:
        self.limits = limits
        self.log = log
        self.attached: dict[str, Attached] = {}
        self._sessions: OrderedDict[str, str] = OrderedDict()
        self.recent = RecentFrames(limits.recent_window)
        self.buffer: ReplayBuffer | None = None
        self.hold: Hold | None = None
        self.bus_down = False
        self._catching_up: set[str] = set()

    def __len__(self) -> int:
        return len(self.attached)

    def check(self) -> None:
        """Raise AssertionError if the invariant above does not hold (for tests)."""
        if len(self.attached) <= SESSION_HISTORY:
            for conn_id, a in self.attached.items():
                assert a.conn_id == conn_id, (conn_id, a)
                assert self._sessions.get(conn_id) == a.session_id, conn_id
        assert self.buffer is None or not self.attached, "a replay buffer while attached"
        assert self.hold is None or self.bus_down or self.hold.waiting, "an idle hold"

    # --- attach / detach ------------------------------------------------------------------

    def attach(
        self, conn_id: str, session_id: str, api_instance: str = "", now: float | None = None
    ) -> list[bytes]:
        """A websocket opened: returns what is owed to its session (JS replay), in order.

        An older connection of the same session is stale (its api replica may have died
        without a detach): it is replaced, as jupyter_server replaces it.
        """
        for stale in self.same_session(session_id):
            if stale.conn_id == conn_id:
                continue  # the same connection again: its api replica is back after an outage
            self.log.info("Replacing stale connection %s of session %s", stale.conn_id, session_id)
            self.attached.pop(stale.conn_id, None)
            if self.hold is not None and self.hold.waiting_for(stale.conn_id):
                self.hold.transfer(stale.conn_id, conn_id)
        at = time.monotonic() if now is None else now
        self.attached[conn_id] = Attached(conn_id, session_id, api_instance, at)
        self._sessions[conn_id] = session_id
        while len(self._sessions) > SESSION_HISTORY:
            self._sessions.popitem(last=False)
        owed: list[bytes] = []
        if self.buffer is not None:
            if self.buffer.session_id in (session_id, ANY_SESSION):
                owed = self.buffer.drain()
                self.log.info("Replaying %d buffered messages", len(owed))
                for frame in owed:  # sent now: owed again if this replica dies too
                    self.recent.add(conn_id, frame, now=at)
            else:
                self.log.info(
                    "Discarding %d buffered messages for %s",
                    len(self.buffer),
                    self.buffer.session_id,
                )
            self.buffer = None
        return owed

    def buffer_unclaimed(self) -> None:
        """A re-adopted kernel: its clients were attached to the crashed worker, unknown here.
        Until one attaches, keep what the kernel sends for it (an api replica that dies before
        its websockets re-attach here would otherwise leave that output to nobody): the first
        attach, of whatever session, is owed it; its api drops what it already delivered."""
        if not self.attached and self.buffer is None:
            self._start_buffering(ANY_SESSION)

    def detach(self, conn_id: str) -> None:
        """A websocket closed; the last one to close starts buffering for its session."""
        owed = self.hold.abandon(conn_id) if self.hold is not None else []
        session_id = self._forget(conn_id)
        if session_id is not None and not self.attached:
            self._start_buffering(session_id, owed)
        self._end_hold_if_done()

    def drop_lost(self, conn_ids: list[str], since: float) -> None:
        """Connections whose api replica died: detach them, and if none is left, owe their
        session what was sent to them since `since` (the api's last sign of life)."""
        sessions = [s for s in map(self._forget, conn_ids) if s is not None]
        if not sessions or self.attached:
            return
        self._start_buffering(sessions[-1])
        if self.buffer is not None:
            lost = set(conn_ids)
            for at, target, frame in self.recent.since(since):
                if target is None or target in lost:
                    self.buffer.add(frame, now=at)

    def drop_frames(self) -> None:
        """The kernel is gone: what it sent is owed to nobody any more (and its large
        messages are not kept until a garbage collection finds the kernel)."""
        self.recent = RecentFrames(self.limits.recent_window)
        self.buffer = None
        self.hold = None

    def knows(self, conn_id: str) -> bool:
        """`conn_id` attached to this kernel here (now or lately)."""
        return conn_id in self._sessions

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

    def _forget(self, conn_id: str) -> str | None:
        attached = self.attached.pop(conn_id, None)
        return None if attached is None else attached.session_id

    def _start_buffering(self, session_id: str, owed: Sequence[bytes] = ()) -> None:
        if self.limits.replay_window <= 0:
            return
        self.buffer = ReplayBuffer(
            session_id,
            self.limits.replay_max_messages,
            self.limits.replay_max_bytes,
            self.limits.replay_window,
        )
        for frame in owed:
            self.buffer.add(frame)

    # --- where output goes (the bridge's hot path) -----------------------------------------

    def note_iopub(self, frame: bytes) -> None:
        """An iopub frame about to be published: kept for a session with nobody attached,
        else remembered as sent to every connection."""
        if self.buffer is not None:
            self.buffer.add(frame)
        elif self.attached:
            self.recent.add(None, frame)

    def note_generated(self, frame: bytes) -> None:
        """A status the worker generates: kept for a session with nobody attached."""
        if self.buffer is not None:
            self.buffer.add(frame)

    def reply_target(self, conn_id: str, frame: bytes) -> str | None:
        """The connection a reply to `conn_id`'s request goes to (remembered as sent), or
        None: buffered for its session, or dropped."""
        if conn_id in self.attached:
            target: str | None = conn_id
        else:
            target = self._successor(conn_id)
            if target is None and conn_id not in self._sessions:
                # Attached to this kernel's previous worker (this one re-adopted the kernel):
                # the websocket is still open at its api replica, which listens on its subject.
                target = conn_id
                if self.buffer is not None and self.buffer.session_id == ANY_SESSION:
                    self.buffer.add(frame)  # unless that replica is gone too
        if target is not None:
            self.recent.add(target, frame)
        elif self.buffer is not None and self._sessions.get(conn_id) == self.buffer.session_id:
            self.buffer.add(frame)
        return target

    def _successor(self, conn_id: str) -> str | None:
        """The open connection that reconnected with the session of a closed one, if any.

        jupyter_server uses the session_id as the ZMQ identity, so a reply to a request sent
        before a reconnect reaches the new socket of the same session; so here.
        """
        session_id = self._sessions.get(conn_id)
        if session_id is None:
            return None
        for candidate in reversed(self.attached.values()):
            if candidate.session_id == session_id:
                return candidate.conn_id
        return None

    def hold_frame(self, target: str | None, frame: bytes) -> list[str]:
        """While a hold is on: keep `frame` for the connections it waits for; returns the
        connections already caught up that get it directly (none while the bus is down)."""
        assert self.hold is not None
        self.hold.add(target, frame)
        if self.bus_down:
            return []
        return [
            conn_id
            for conn_id in self.attached
            if not self.hold.waiting_for(conn_id) and target in (None, conn_id)
        ]

    # --- bus outages ------------------------------------------------------------------------

    def bus_lost(self, last_seen: dict[str, float]) -> None:
        """The bus went down: hold output for every open connection, seeded with what was sent
        to it since its api replica last proved it had received everything (`last_seen`, per
        api instance, monotonic). The api drops what it already delivered (by msg_id)."""
        self.bus_down = True
        if not self.attached:
            return
        since = {
            a.conn_id: max(a.attached_at, last_seen.get(a.api_instance, 0.0))
            for a in self.attached.values()
        }
        if self.hold is None:
            self.hold = self._new_hold()
            for _, target, frame in self.recent.since(min(since.values())):
                self.hold.add(target, frame)
            start = 0
        else:
            start = self.hold.end
        for conn_id in self.attached:
            self.hold.cursors.setdefault(conn_id, start)
        self.log.warning(
            "bus down: holding output for %d connections (%d recent messages kept)",
            len(self.attached),
            len(self.hold.frames),
        )

    def bus_back(self) -> None:
        self.bus_down = False
        self._end_hold_if_done()

    def resume_for(self, conn_id: str, since: float) -> None:
        """Its api replica re-attached `conn_id` after that replica's own reconnect, while this
        worker stayed connected (in a NATS cluster one node's loss cuts off only the clients
        on it): what was published to it meanwhile found no subscriber. Hold output for it,
        seeded with what was sent to it since `since` (its replica's last ping answer), so
        that the catch-up resends that in order before it goes live again; the api drops what
        it already delivered (by msg_id)."""
        if self.hold_for(conn_id):
            assert self.hold is not None
            for frame in self.sent_to(conn_id, since):
                self.hold.add(conn_id, frame)

    def hold_for(self, conn_id: str) -> bool:
        """Hold output for `conn_id` from now on (a hold that starts empty), so that what it
        is owed goes out before its live output. False if it is not attached or already held
        for (then nothing changes)."""
        if conn_id not in self.attached or self.waiting_for(conn_id):
            return False
        if self.hold is None:
            self.hold = self._new_hold()
        self.hold.cursors[conn_id] = self.hold.end
        return True

    def begin_catch_up(self, conn_id: str) -> bool:
        """Claim the one catch-up of `conn_id` now (False if one runs): from here on its hold
        is not expired, even before the bridge sends anything. One at a time: the worker
        (after its own reconnect) and the api replica (re-attaching after its reconnect) may
        both start one, and two loops taking turns would interleave their batches out of
        order."""
        if conn_id in self._catching_up:
            return False
        self._catching_up.add(conn_id)
        return True

    def catch_up_batch(self, conn_id: str) -> list[bytes]:
        """The next frames held for `conn_id`, in order; empty when it is caught up (then it
        is released, with no await between the last take and the release) or cannot be now."""
        if self.hold is None or not self.hold.waiting_for(conn_id) or self.bus_down:
            return []
        frames = self.hold.take(conn_id)
        if not frames:
            self.hold.release(conn_id)
            self._end_hold_if_done()
        return frames

    def end_catch_up(self, conn_id: str) -> None:
        self._catching_up.discard(conn_id)

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
            session_id = self._forget(conn_id)
            self.log.warning("connection %s did not come back after the bus outage", conn_id)
            if session_id is not None and not self.attached:
                self._start_buffering(session_id, owed)
        if hold.dropped:
            self.log.warning("%d held messages were dropped (hold limits)", hold.dropped)
        if not hold.waiting:
            self.hold = None

    def waiting_for(self, conn_id: str) -> bool:
        return self.hold is not None and self.hold.waiting_for(conn_id)

    def _new_hold(self) -> Hold:
        return Hold({}, self.limits.replay_max_messages, self.limits.replay_max_bytes)

    def _end_hold_if_done(self) -> None:
        if self.hold is not None and not self.hold.waiting and not self.bus_down:
            self.hold = None
