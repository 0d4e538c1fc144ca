"""Which client messages of each connection this worker received, by the sequence number the
api gives each one (its reply subject, `subjects.input_reply`). Pure logic (ADR 0024).

It answers two questions: is a message a duplicate (the api sent it again, but it had arrived),
and which of the messages the api still keeps never arrived here (lost on the way, e.g. into a
dead cluster route, without NATS saying so), so that the api sends those again.

What a connection sent before this worker knew it (a successor of a crashed worker, or a
connection first seen by one of its messages) is not known here: it is never reported missing.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

REMEMBERED = 512
"""Sequence numbers remembered per connection: more than the api keeps for a resend
(`kernelbus_api.channels.undelivered.KEEP`), so that none it may ask about is forgotten."""
CONNECTIONS = 1000
"""Connections remembered per kernel (the oldest is forgotten first)."""


@dataclass
class ConnectionInputs:
    """One connection's received sequence numbers above `floor` (at or below it: unknown here,
    taken as delivered)."""

    floor: int
    _received: set[int] = field(default_factory=set)
    _order: deque[int] = field(default_factory=deque)

    def receive(self, seq: int) -> bool:
        """Record `seq`; False if it arrived before (a duplicate, to be dropped)."""
        if seq in self._received:
            return False
        self._received.add(seq)
        self._order.append(seq)
        while len(self._order) > REMEMBERED:
            forgotten = self._order.popleft()
            self._received.discard(forgotten)
            self.floor = max(self.floor, forgotten)
        return True

    def missing(self, kept: Iterable[int]) -> list[int]:
        """Of `kept`, those above the floor that never arrived, in order."""
        return sorted(s for s in set(kept) if s > self.floor and s not in self._received)


@dataclass
class ReceivedInputs:
    """Every connection of one kernel."""

    _conns: OrderedDict[str, ConnectionInputs] = field(default_factory=OrderedDict)

    def receive(self, conn_id: str, seq: int) -> bool:
        """A client message arrived: False if it is a duplicate. A connection not known yet
        is known from this message on."""
        conn = self._conns.get(conn_id)
        if conn is None:
            conn = self._remember(conn_id, ConnectionInputs(floor=seq - 1))
        return conn.receive(seq)

    def attached(self, conn_id: str, sent: int, kept: Iterable[int]) -> list[int]:
        """A connection (re-)attached, its api having given `sent` sequence numbers so far and
        keeping `kept` for a resend: those of `kept` that never arrived. A connection not
        known here is known from now on, and nothing is reported for it."""
        conn = self._conns.get(conn_id)
        if conn is None:
            self._remember(conn_id, ConnectionInputs(floor=sent))
            return []
        return conn.missing(kept)

    def forget(self, conn_id: str) -> None:
        self._conns.pop(conn_id, None)

    def _remember(self, conn_id: str, conn: ConnectionInputs) -> ConnectionInputs:
        self._conns[conn_id] = conn
        while len(self._conns) > CONNECTIONS:
            self._conns.popitem(last=False)
        return conn
