"""`EventStore`: the events the service accepted, in SQLite (stdlib sqlite3).

Every blocking call runs on one dedicated thread (sqlite connections are thread-bound), so the
event loop never waits on the disk. Insertion is idempotent on the event id: a redelivered
event (the service died between commit and ack) is stored once.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from kernelbus.schemas import Capsule
from kernelbus.timefmt import parse_timestamp

T = TypeVar("T")
P = ParamSpec("P")

_DDL = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    schema_id TEXT NOT NULL,
    version TEXT NOT NULL,
    ts REAL NOT NULL,
    kernel_id TEXT,
    source TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_schema ON events (schema_id, seq);
CREATE INDEX IF NOT EXISTS events_kernel ON events (kernel_id, seq);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS deadletters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ref TEXT NOT NULL UNIQUE,
    reason TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    event_id: str
    source: str | None
    capsule: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "id": self.event_id, "source": self.source, "event": self.capsule}


@dataclass(frozen=True)
class NewEvent:
    event_id: str
    source: str | None
    capsule: Capsule


@dataclass(frozen=True)
class EventFilter:
    """Query filters; `after` is a cursor (a `seq` from a previous page)."""

    schema_id: str | None = None
    kernel_id: str | None = None
    since: float | None = None
    until: float | None = None
    after: int = 0

    def matches(self, event: StoredEvent) -> bool:
        """The same filter applied in memory (live tail)."""
        capsule = event.capsule
        if self.schema_id and capsule.get("__schema__") != self.schema_id:
            return False
        if self.kernel_id and capsule.get("kernel_id") != self.kernel_id:
            return False
        ts = parse_timestamp(str(capsule["__timestamp__"])).timestamp()
        if self.since is not None and ts < self.since:
            return False
        return not (self.until is not None and ts > self.until)


class EventStore:
    """Async facade over one SQLite file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-store")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        await self._run(self._close)
        self._pool.shutdown(wait=True)

    async def add(self, event_id: str, source: str | None, capsule: Capsule) -> StoredEvent | None:
        """Commit the event; `None` when an event with this id is already stored."""
        return (await self.add_many([NewEvent(event_id, source, capsule)]))[0]

    async def add_many(self, batch: list[NewEvent]) -> list[StoredEvent | None]:
        """Commit a batch in one transaction (one fsync); per event as `add`."""
        return await self._run(self._add_many, batch)

    async def add_deadletter(self, ref: str, reason: str) -> None:
        """Count one rejected event (idempotent on `ref`, the stream sequence)."""
        await self._run(self._add_deadletter, ref, reason)

    async def query(self, filters: EventFilter, limit: int) -> list[StoredEvent]:
        return await self._run(self._query, filters, limit)

    async def counts(self) -> dict[str, int]:
        return await self._run(self._counts)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a commit survives a crash: we ack after it
        db.executescript(_DDL)
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("event store is not open")
        return self._db

    def _add_many(self, batch: list[NewEvent]) -> list[StoredEvent | None]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            added = [self._add(e.event_id, e.source, e.capsule) for e in batch]
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return added

    def _add(self, event_id: str, source: str | None, capsule: Capsule) -> StoredEvent | None:
        body = capsule.to_json()
        kernel_id = body.get("kernel_id")
        cursor = self._conn().execute(
            "INSERT OR IGNORE INTO events (event_id, schema_id, version, ts, kernel_id, source,"
            " body) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                capsule.schema_id,
                capsule.version,
                parse_timestamp(capsule.timestamp).timestamp(),
                kernel_id if isinstance(kernel_id, str) else None,
                source,
                json.dumps(body),
            ),
        )
        if cursor.rowcount == 0:
            return None
        return StoredEvent(int(cursor.lastrowid or 0), event_id, source, body)

    def _add_deadletter(self, ref: str, reason: str) -> None:
        self._conn().execute(
            "INSERT OR IGNORE INTO deadletters (ref, reason) VALUES (?, ?)", (ref, reason)
        )

    def _query(self, filters: EventFilter, limit: int) -> list[StoredEvent]:
        where, params = _where(filters)
        rows = self._conn().execute(
            f"SELECT seq, event_id, source, body FROM events WHERE {where} ORDER BY seq LIMIT ?",
            (*params, limit),
        )
        return [StoredEvent(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def _counts(self) -> dict[str, int]:
        db = self._conn()
        stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
        dead = db.execute("SELECT count(*) FROM deadletters").fetchone()[0]
        return {"stored": int(stored), "deadletters": int(dead)}


def _where(filters: EventFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = ["seq > ?"]
    params: list[Any] = [filters.after]
    for column, value in (
        ("schema_id = ?", filters.schema_id),
        ("kernel_id = ?", filters.kernel_id),
        ("ts >= ?", filters.since),
        ("ts <= ?", filters.until),
    ):
        if value is not None and value != "":
            clauses.append(column)
            params.append(value)
    return " AND ".join(clauses), params
