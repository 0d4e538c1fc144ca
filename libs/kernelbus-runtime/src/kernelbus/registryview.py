"""A watch-fed, in-memory view of the kernel registry and the websocket connection counts.

Reading the registry key by key costs one KV get per kernel (N+1 reads on every
`GET /api/kernels`, admission and cull pass). The view instead keeps one ordered KV watcher per
bucket open and applies every update to a dict, so listing is a memory read.

Consistency: `barrier()` asks the stream for its last sequence (one request, whatever the
number of kernels) and waits until the watcher has applied it. A read after the barrier sees
every write that completed before it, from any process: a kernel started through api replica A
is listed by replica B as soon as A's POST has answered.

Resilience: a NATS reconnect (or a barrier that cannot be met) rebuilds the watcher; the old
contents serve reads until the new watcher has caught up, then are swapped in at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import ValidationError

from kernelbus import subjects
from kernelbus.bus_kv import kv_stream
from kernelbus.models import ExecutionState, KernelRecord, jupyter_kernel_model
from kernelbus.tasks import cancel_and_wait

log = logging.getLogger(__name__)

T = TypeVar("T")

RECONNECT_POLL = 0.25
"""How often the view checks the client's reconnect counter (seconds)."""


@dataclass(frozen=True, slots=True)
class KernelSummary:
    """What listing, admission and culling need of a registry record (no connection info:
    ~0.7 KB in memory instead of ~2.6 KB for a full `KernelRecord`)."""

    id: str
    name: str
    worker_id: str
    execution_state: ExecutionState
    last_activity: datetime
    started_at: datetime
    reason: str
    username: str | None
    json_head: bytes
    """The Jupyter model as JSON up to the connection count (`model_json`): rendered once
    per registry write, so that listing 10,000 kernels is a join, not 10,000 renderings."""
    json_tail: bytes

    @classmethod
    def of(cls, record: KernelRecord) -> KernelSummary:
        model = record.jupyter_model(0)
        head = _json({k: model[k] for k in ("id", "name", "last_activity", "execution_state")})
        tail = b"}" if "reason" not in model else b',"reason":' + _json(model["reason"]) + b"}"
        return cls(
            id=record.id,
            name=_intern(record.name),
            worker_id=_intern(record.worker_id),
            execution_state=record.execution_state,
            last_activity=record.last_activity,
            started_at=record.started_at,
            reason=record.reason,
            username=_intern(record.username) if record.username else record.username,
            json_head=head[:-1] + b',"connections":',
            json_tail=tail,
        )

    def record(self) -> KernelRecord:
        """A record with what the summary keeps (no connection, provisioner or launch info):
        enough for the REST model, the websocket's checks and a command's routing."""
        return KernelRecord(
            id=self.id,
            name=self.name,
            worker_id=self.worker_id,
            execution_state=self.execution_state,
            last_activity=self.last_activity,
            started_at=self.started_at,
            reason=self.reason,
            username=self.username,
        )

    def model_json(self, connections: int = 0) -> bytes:
        """`jupyter_model(connections)` as compact JSON (as Starlette's JSONResponse writes)."""
        return self.json_head + str(int(connections)).encode() + self.json_tail

    def jupyter_model(self, connections: int = 0) -> dict[str, Any]:
        return jupyter_kernel_model(
            self.id, self.name, self.last_activity, self.execution_state, connections, self.reason
        )


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _intern(value: str) -> str:
    return sys.intern(value)


def decode_kernel(value: bytes) -> KernelSummary | None:
    try:
        return KernelSummary.of(KernelRecord.model_validate_json(value))
    except ValidationError:
        return None


@dataclass(frozen=True, slots=True)
class ConnectionEntry:
    count: int
    written: float
    """Server time of the write (epoch seconds): entries age out of the bucket after a TTL,
    which a watcher is not told about, so readers skip entries older than the TTL."""


def decode_connections(value: bytes) -> int | None:
    try:
        return int(value or b"0")
    except ValueError:
        return None


@dataclass
class BucketView(Generic[T]):
    """The current value of every key of one KV bucket, kept by an ordered watcher.

    `js` and `name` are ours to keep (not read back from nats-py's private attributes of
    `kv`): the barrier asks the bucket's stream (`bus_kv.kv_stream(name)`) for its last
    sequence."""

    js: JetStreamContext
    name: str
    kv: KeyValue
    decode: Callable[[bytes], T | None]
    entries: dict[str, tuple[T, float]] = field(default_factory=dict)
    revision: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _advanced: asyncio.Event = field(default_factory=asyncio.Event)
    _generation: int = 0

    async def run(self, stop: asyncio.Event, rebuild: asyncio.Event) -> None:
        """Watch until `stop`; start over (keeping served contents) whenever `rebuild` is set."""
        while not stop.is_set():
            rebuild.clear()
            self._generation += 1
            try:
                await self._watch_once(stop, rebuild)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("registry view of %s: watch failed (%s); rebuilding", self.name, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

    async def _watch_once(self, stop: asyncio.Event, rebuild: asyncio.Event) -> None:
        info = await self.js.stream_info(kv_stream(self.name))
        target = info.state.last_seq if info.state.messages else 0
        staging: dict[str, tuple[T, float]] = {}
        staging_rev = 0
        synced = False
        watcher = await self.kv.watchall()

        def swap() -> None:
            nonlocal synced
            self.entries = staging
            self.revision = max(self.revision, staging_rev)
            synced = True
            self.ready.set()
            self._advanced.set()
            log.info(
                "registry view of %s: %d keys at revision %d", self.name, len(staging), staging_rev
            )

        if target == 0:
            swap()
        waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(rebuild.wait())}
        try:
            while not stop.is_set() and not rebuild.is_set():
                getter = asyncio.ensure_future(watcher.updates(timeout=None))  # type: ignore[no-untyped-call]
                done, _ = await asyncio.wait({getter, *waits}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return
                entry = getter.result()
                if entry is None:
                    # The initial-values marker: trust it only for an empty bucket (it can come
                    # early under load, as `bus_kv.Bucket.keys` explains).
                    if not synced and not staging and target == 0:
                        swap()
                    continue
                if not isinstance(entry, KeyValue.Entry):
                    return  # the watcher was stopped
                book = self.entries if synced else staging
                self._apply(book, entry)
                rev = entry.revision or 0
                if synced:
                    self.revision = max(self.revision, rev)
                    self._advanced.set()
                else:
                    staging_rev = max(staging_rev, rev)
                    if staging_rev >= target or entry.delta == 0:
                        swap()
        finally:
            for wait in waits:
                wait.cancel()
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    def _apply(self, book: dict[str, tuple[T, float]], entry: KeyValue.Entry) -> None:
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            book.pop(entry.key, None)
            return
        value = self.decode(entry.value)
        if value is None:
            log.warning("registry view of %s: unreadable entry under key %s", self.name, entry.key)
            book.pop(entry.key, None)
            return
        created = entry.created
        written = created.timestamp() if isinstance(created, datetime) else time.time()
        book[entry.key] = (value, written)

    async def barrier(self, timeout: float) -> bool:
        """Wait until every write the stream holds now has been applied; False on timeout.

        When the stream cannot say (no leader: a cluster node was lost and a new leader is
        being elected, which takes seconds), no write can complete either: the view's
        contents are served as they are rather than failing the read.
        """
        try:
            info = await asyncio.wait_for(self.js.stream_info(kv_stream(self.name)), timeout / 2)
        except Exception as exc:
            if not self.ready.is_set():
                raise
            log.warning(
                "registry view of %s: stream unavailable (%r); serving the view", self.name, exc
            )
            return True
        target = info.state.last_seq
        deadline = time.monotonic() + timeout
        while self.revision < target or not self.ready.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._advanced.clear()
            if self.revision >= target and self.ready.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), left)
        return True


@dataclass
class RegistryView:
    """Watch-fed views of `kb_kernels` and `kb_connections` for one process."""

    nc: Client
    kernels: BucketView[KernelSummary]
    connections: BucketView[int]
    barrier_timeout: float = 2.0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _rebuild: dict[str, asyncio.Event] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def of(
        cls, nc: Client, js: JetStreamContext, kernels: KeyValue, connections: KeyValue
    ) -> RegistryView:
        return cls(
            nc,
            BucketView(js, subjects.KERNELS_BUCKET, kernels, decode_kernel),
            BucketView(js, subjects.CONNECTIONS_BUCKET, connections, decode_connections),
        )

    def start(self) -> None:
        for name, view in (("kernels", self.kernels), ("connections", self.connections)):
            rebuild = self._rebuild.setdefault(name, asyncio.Event())
            self._tasks.append(asyncio.create_task(view.run(self._stop, rebuild)))
        self._tasks.append(asyncio.create_task(self._watch_reconnects()))

    async def _watch_reconnects(self) -> None:
        seen = self.nc.stats["reconnects"]
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RECONNECT_POLL)
            now = self.nc.stats["reconnects"]
            if now != seen:
                seen = now
                log.info("registry view: NATS reconnected, rebuilding the watchers")
                self.rebuild()

    def rebuild(self) -> None:
        for event in self._rebuild.values():
            event.set()

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(
                asyncio.gather(self.kernels.ready.wait(), self.connections.ready.wait()), timeout
            )
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._stop.set()
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()

    async def kernel_summaries(self) -> list[KernelSummary] | None:
        """Every kernel, consistent with every write completed before the call; None when the
        view cannot catch up in time (the caller then reads the bucket directly)."""
        if not await self.kernels.barrier(self.barrier_timeout):
            self._rebuild.get("kernels", asyncio.Event()).set()
            return None
        return self.kernels_as_held()

    def kernels_as_held(self) -> list[KernelSummary]:
        """Every kernel the view holds now, without a barrier (it may lack recent writes)."""
        return [value for value, _ in self.kernels.entries.values()]

    def connection_counts(self) -> dict[str, int] | None:
        """kernel_id -> open websockets over every live api replica (None before the first
        load). Not behind a barrier: counts are refreshed every few seconds anyway."""
        if not self.connections.ready.is_set():
            return None
        oldest = time.time() - subjects.CONNECTIONS_TTL
        counts: dict[str, int] = {}
        for key, (count, written) in list(self.connections.entries.items()):
            if written < oldest:
                continue
            kernel_id = key.split(".", 1)[0]
            counts[kernel_id] = counts.get(kernel_id, 0) + count
        return counts
