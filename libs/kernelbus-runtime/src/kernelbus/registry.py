"""The kernel registry and worker directory, kept in JetStream KV so that no process holds
state that matters only in its own memory. Every api replica, worker and culler reads the
same view."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ValidationError

from kernelbus import bus, subjects
from kernelbus.bounded import BOUND, UNANSWERED, LastGood, within
from kernelbus.bus_kv import kv_keys, kv_stream, kv_subject
from kernelbus.models import KernelRecord, WorkerHeartbeat
from kernelbus.registryview import KernelSummary, RegistryView

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def _translated(
    method: Callable[Concatenate[Registry, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Registry, P], Coroutine[Any, Any, T]]:
    """nats-py's errors out of `method` become the `KernelbusError` they mean."""

    async def translated(self: Registry, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        except nats.errors.Error as exc:
            raise bus.translate(exc, self.connected()) from exc

    translated.__name__, translated.__doc__ = method.__name__, method.__doc__
    return translated


WORKERS_KEEP = 60.0
"""Seconds the last worker list is served while the workers bucket has no stream leader
(ADR 0023): longer than an election (4-9 s, and more on a loaded host), during which no
heartbeat can be written. A worker gone meanwhile is skipped by placement (no responder)."""


@dataclass
class Registry:
    kernels: KeyValue
    workers: KeyValue
    connections: KeyValue
    js: JetStreamContext
    view: RegistryView | None = field(default=None, compare=False)
    """Watch-fed view for listing (api, culler): see `kernelbus.registryview`."""
    connected: Callable[[], bool] = field(default=lambda: True, compare=False)
    """Whether the connection is up, to tell `BusUnavailable` from `BusTimeout`."""
    workers_seen: LastGood[list[WorkerHeartbeat]] = field(
        default_factory=lambda: LastGood(keep=WORKERS_KEEP), compare=False
    )
    """The last worker list, served while the workers bucket elects a leader (ADR 0023)."""

    @classmethod
    async def open(cls, js: JetStreamContext, nc: Client | None = None) -> Registry:
        """The registry's buckets (they exist: `bus.ensure_infrastructure`). Its methods raise
        our own errors (`bus.translate`), never nats-py's; `nc` tells them whether the bus is
        up (without it a timeout counts as `BusTimeout`)."""
        try:
            kernels = await js.key_value(subjects.KERNELS_BUCKET)
            workers = await js.key_value(subjects.WORKERS_BUCKET)
            connections = await js.key_value(subjects.CONNECTIONS_BUCKET)
        except nats.errors.Error as exc:
            raise bus.translate(exc, nc is None or nc.is_connected) from exc
        connected = (lambda: nc.is_connected) if nc is not None else (lambda: True)
        return cls(kernels, workers, connections, js, connected=connected)

    async def start_view(self, nc: Client, timeout: float = 10.0) -> None:
        """Open the watch-fed view and wait (up to `timeout`) for its first full load; until
        it has one, listings read the buckets directly."""
        self.view = RegistryView.of(nc, self.js, self.kernels, self.connections)
        self.view.start()
        if not await self.view.wait_ready(timeout):
            log.warning(
                "registry view not loaded after %.0f s; reading the buckets directly", timeout
            )

    async def close_view(self) -> None:
        if self.view is not None:
            await self.view.close()
            self.view = None

    async def kernel_summaries(self) -> list[KernelSummary]:
        """Every kernel, as of now: from the view when it has caught up, else read directly.

        When the view has not caught up and JetStream does not answer the direct read either
        (a cluster electing a leader, ADR 0023), the view's contents are served as they are,
        as the view's barrier does when the stream cannot say: a listing seconds old rather
        than a 503."""
        view = self.view if self.view is not None and self.view.kernels.ready.is_set() else None
        if view is not None and (summaries := await view.kernel_summaries()) is not None:
            return summaries
        try:
            return [KernelSummary.of(record) for record in await self.list_kernels()]
        except UNANSWERED as exc:
            if view is None:
                raise
            log.warning("kernel listing: registry not answering (%s); from the view", exc.message)
            return view.kernels_as_held()

    def viewed(self, kernel_id: str) -> bool | None:
        """Whether the watch-fed view holds `kernel_id`; None without a loaded view."""
        if self.view is None or not self.view.kernels.ready.is_set():
            return None
        return kernel_id in self.view.kernels.entries

    def viewed_record(self, kernel_id: str) -> KernelRecord | None:
        """The kernel as the watch-fed view holds it (`KernelSummary.record`), if it does."""
        if self.view is None or (held := self.view.kernels.entries.get(kernel_id)) is None:
            return None
        return held[0].record()

    # --- kernels ------------------------------------------------------------------------

    async def get_kernel(self, kernel_id: str) -> KernelRecord | None:
        entry = await self.get_kernel_entry(kernel_id)
        return entry[0] if entry else None

    @_translated
    async def get_kernel_entry(self, kernel_id: str) -> tuple[KernelRecord, int] | None:
        """The record and its KV revision (for compare-and-set updates)."""
        try:
            entry = await self.kernels.get(kernel_id)
            value, revision = entry.value, entry.revision or 0
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            # A direct get may be answered by a replica a write has not reached yet: a miss
            # is asked again of the stream's leader (read-your-writes for a kernel just started).
            # A stream electing its leader cannot answer: the replica's miss stands (ADR 0023).
            try:
                found = await within(
                    _leader_get(self.js, subjects.KERNELS_BUCKET, kernel_id), BOUND
                )
            except UNANSWERED as exc:
                log.info("kernel %s: no stream leader to ask (%s)", kernel_id, exc.message)
                return None
            if found is None:
                return None
            value, revision = found
        if not value:
            return None
        try:
            return KernelRecord.model_validate_json(value), revision
        except ValidationError:
            log.warning("unreadable registry entry for kernel %s", kernel_id)
            return None

    @_translated
    async def put_kernel(self, record: KernelRecord, bound: float | None = None) -> int:
        """Write `record`; with `bound`, a `BusTimeout` after that many seconds."""
        put = self.kernels.put(record.id, record.model_dump_json().encode())
        return await (put if bound is None else within(put, bound))

    @_translated
    async def replace_kernel(self, record: KernelRecord, last: int) -> bool:
        """Write `record` only if its entry is still at revision `last`; False if it changed."""
        try:
            await self.kernels.update(record.id, record.model_dump_json().encode(), last=last)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    @_translated
    async def delete_kernel(self, kernel_id: str, bound: float | None = None) -> None:
        """Remove the kernel's record; with `bound`, a `BusTimeout` after that many seconds."""
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            purge = self.kernels.purge(kernel_id)
            await (purge if bound is None else within(purge, bound))

    @_translated
    async def list_kernels(self) -> list[KernelRecord]:
        records = []
        for key in await kv_keys(self.js, subjects.KERNELS_BUCKET):
            record = await self.get_kernel(key)
            if record is not None:
                records.append(record)
        return records

    # --- workers ------------------------------------------------------------------------

    @_translated
    async def put_heartbeat(self, heartbeat: WorkerHeartbeat) -> None:
        await self.workers.put(heartbeat.worker_id, heartbeat.model_dump_json().encode())

    @_translated
    async def remove_worker(self, worker_id: str) -> None:
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            await self.workers.purge(worker_id)

    async def live_workers(self) -> list[WorkerHeartbeat]:
        """Workers whose heartbeat has not aged out of the bucket (TTL `WORKER_TTL`). While
        the bucket cannot be listed (no stream leader), the last list of up to `WORKER_TTL`
        seconds ago (`workers_seen`)."""
        return await self.workers_seen.get(self._list_workers, "worker list")

    @_translated
    async def _list_workers(self) -> list[WorkerHeartbeat]:
        workers = []
        for key in await kv_keys(self.js, subjects.WORKERS_BUCKET):
            try:
                entry = await self.workers.get(key)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                continue
            if entry.value:
                try:
                    workers.append(WorkerHeartbeat.model_validate_json(entry.value))
                except ValidationError:
                    log.warning("unreadable heartbeat under key %s", key)
        return workers

    # --- websocket connections (per api replica, aged out with the replica) ---------------

    @_translated
    async def set_connections(self, kernel_id: str, api_instance: str, count: int) -> None:
        key = f"{kernel_id}.{api_instance}"
        if count > 0:
            await self.connections.put(key, str(count).encode())
        else:
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                await self.connections.purge(key)

    @_translated
    async def connection_counts(self) -> dict[str, int]:
        """kernel_id -> open websockets summed over every live api replica."""
        if self.view is not None and (viewed := self.view.connection_counts()) is not None:
            return viewed
        counts: dict[str, int] = {}
        for key in await kv_keys(self.js, subjects.CONNECTIONS_BUCKET):
            kernel_id = key.split(".", 1)[0]
            try:
                entry = await self.connections.get(key)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                continue
            try:
                counts[kernel_id] = counts.get(kernel_id, 0) + int(entry.value or b"0")
            except ValueError:
                continue
        return counts

    @_translated
    async def connection_replicas(self) -> dict[str, set[str]]:
        """kernel_id -> the api replicas that recorded open websockets on it."""
        replicas: dict[str, set[str]] = {}
        for key in await kv_keys(self.js, subjects.CONNECTIONS_BUCKET):
            kernel_id, _, api_instance = key.partition(".")
            if api_instance:
                replicas.setdefault(kernel_id, set()).add(api_instance)
        return replicas

    async def connections_of(self, kernel_id: str) -> int:
        return (await self.connection_counts()).get(kernel_id, 0)


async def _leader_get(js: JetStreamContext, bucket: str, key: str) -> tuple[bytes, int] | None:
    """The key's last message as the stream leader has it; None when absent or deleted."""
    try:
        msg = await js.get_last_msg(kv_stream(bucket), kv_subject(bucket, key), direct=False)
    except nats.js.errors.NotFoundError:
        return None
    operation = (msg.headers or {}).get("KV-Operation")
    if operation in ("DEL", "PURGE") or not msg.data:
        return None
    return msg.data, msg.seq or 0
