"""This replica's session writes: pending ones, and read-your-writes for all (ADR 0023).

A session put or purge that JetStream does not take within `BOUND` (the `kb_sessions` stream
electing its leader) is kept here, pending, and written by the api's flush task once
JetStream answers; only the latest write of a session is kept (a later one supersedes an
earlier pending one). Every write, pending or landed, is also a note that this replica's
reads apply over what KV (or the last good listing) says: until a listing fetched after the
write landed, and at most `keep` seconds after it landed. A pending write never expires.
Pure logic, generic in the record type: the caller does the I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from kernelbus_api.recent import GONE, Gone

__all__ = ["GONE", "KEEP", "Gone", "SessionWrites"]

V = TypeVar("V")

KEEP = 60.0
"""Seconds a note lasts after its write landed: far longer than a leader election (4-9 s)."""


@dataclass
class _Note(Generic[V]):
    value: V | Gone
    token: int
    landed: float | None = None
    """When JetStream took the write (monotonic clock); None while it is pending."""


@dataclass
class SessionWrites(Generic[V]):
    keep: float = KEEP
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    _notes: dict[str, _Note[V]] = field(default_factory=dict)
    _tokens: int = 0

    def note(self, key: str, value: V | Gone) -> int:
        """This replica writes `value` (GONE: a purge) to `key`: pending until `landed`.
        Supersedes any earlier write of `key`. Returns the write's token."""
        self._tokens += 1
        self._notes.pop(key, None)  # re-inserted last: pending writes go in write order
        self._notes[key] = _Note(value, self._tokens)
        return self._tokens

    def pending(self) -> list[tuple[str, V | Gone, int]]:
        """The writes JetStream has not taken yet, oldest first: (key, value, token)."""
        return [(k, n.value, n.token) for k, n in self._notes.items() if n.landed is None]

    def landed(self, key: str, token: int) -> None:
        """JetStream took write `token` of `key`; a later write of `key` stays pending."""
        note = self._notes.get(key)
        if note is not None and note.token == token:
            note.landed = self.clock()

    def retract(self, key: str, token: int) -> None:
        """Write `token` of `key` failed with an error its client is told of: it is dropped
        if it is still pending (a later write of `key` stays)."""
        note = self._notes.get(key)
        if note is not None and note.token == token and note.landed is None:
            del self._notes[key]

    def lookup(self, key: str) -> V | Gone | None:
        """This replica's own latest write of `key` (GONE: purged); None: ask KV."""
        self._expire()
        note = self._notes.get(key)
        return None if note is None else note.value

    def overlay(self, listed: dict[str, V], fetched_at: float | None = None) -> dict[str, V]:
        """`listed` with this replica's writes applied. `fetched_at`: when the listing's fetch
        began (None: a kept listing of unknown age); notes of writes that landed before it
        are in the listing already, and end."""
        self._expire()
        if fetched_at is not None:
            for key in [
                k for k, n in self._notes.items() if n.landed is not None and n.landed < fetched_at
            ]:
                del self._notes[key]
        result = dict(listed)
        for key, note in self._notes.items():
            if note.value is GONE:
                result.pop(key, None)
            else:
                result[key] = note.value
        return result

    def __len__(self) -> int:
        return len(self._notes)

    def _expire(self) -> None:
        now = self.clock()
        for key in [
            k for k, n in self._notes.items() if n.landed is not None and now - n.landed > self.keep
        ]:
            del self._notes[key]
