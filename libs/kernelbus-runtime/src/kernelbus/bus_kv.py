"""JetStream KV buckets behind our own types: the services' side of the bus layer for KV.

A `Bucket` answers a missing or deleted key with None, a lost compare-and-set with
`KeyChanged`, and every other nats-py error with the `KernelbusError` it means
(`bus.translate`), so no service module catches nats-py's exceptions itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from kernelbus import bus
from kernelbus.errors import BusUnavailable

_GONE = (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError)
WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code for a write whose expected last sequence no longer holds."""


class KeyChanged(Exception):
    """A compare-and-set lost: the key exists (create) or changed since `last` (update,
    delete). Local to the caller, never sent over the bus."""


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    revision: int


class Bucket:
    """One KV bucket, opened from a connection once `bus.ensure_infrastructure` made it."""

    def __init__(self, nc: Client, js: JetStreamContext, kv: KeyValue, name: str) -> None:
        self._nc = nc
        self._js = js
        self._kv = kv
        self.name = name

    @classmethod
    async def open(cls, nc: Client, name: str) -> Bucket:
        js = nc.jetstream()
        try:
            kv = await js.key_value(name)
        except nats.errors.Error as exc:
            raise bus.translate(exc, nc.is_connected) from exc
        return cls(nc, js, kv, name)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise KeyChanged(str(exc)) from exc
        except nats.js.errors.APIError as exc:
            # A delete at a stale revision is answered as a plain 400 with this code.
            if exc.err_code == WRONG_LAST_SEQUENCE:
                raise KeyChanged(str(exc)) from exc
            raise bus.translate(exc, self._nc.is_connected) from exc
        except nats.errors.Error as exc:
            raise bus.translate(exc, self._nc.is_connected) from exc

    async def get(self, key: str) -> Entry | None:
        """The key's entry; None when it is absent, deleted or purged."""
        with self._translated():
            try:
                entry = await self._kv.get(key)
            except _GONE:
                return None
        if not entry.value:
            return None
        return Entry(key, entry.value, entry.revision or 0)

    async def put(self, key: str, value: bytes) -> int:
        with self._translated():
            return await self._kv.put(key, value)

    async def create(self, key: str, value: bytes) -> int:
        """Write `key` only if it holds nothing; else `KeyChanged`."""
        with self._translated():
            return await self._kv.create(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        """Write `key` only if its revision is still `last`; else `KeyChanged`."""
        with self._translated():
            return await self._kv.update(key, value, last=last)

    async def delete(self, key: str, last: int | None = None) -> None:
        """Delete `key` (only at revision `last` when given: else `KeyChanged`)."""
        with self._translated():
            try:
                await self._kv.delete(key, last=last)
            except _GONE:
                if last is not None:
                    raise KeyChanged(f"{key} is gone") from None

    async def purge(self, key: str) -> None:
        """Remove `key` and its history; nothing to do when it is absent."""
        with self._translated(), contextlib.suppress(*_GONE):
            await self._kv.purge(key)

    async def keys(self) -> list[str]:
        """Keys that hold a message (purged keys may appear: `get` says None).

        Not nats-py's `KeyValue.keys()`: it reads "nothing pending, nothing received yet" as
        an empty bucket, and the server can report the last message as delivered before it
        reaches the client, so under load it raises `NoKeysError` for a bucket with keys.
        Asking the bucket's stream for its subjects has no such window.
        """
        with self._translated():
            return await kv_keys(self._js, self.name)


def kv_stream(bucket: str) -> str:
    """The stream that holds KV bucket `bucket` (the NATS KV layout: `KV_<bucket>`)."""
    return f"KV_{bucket}"


def kv_subject(bucket: str, key: str = "") -> str:
    """The subject of `key` in `bucket` (`$KV.<bucket>.<key>`); the prefix without a key."""
    return f"$KV.{bucket}.{key}"


async def kv_keys(js: JetStreamContext, bucket: str) -> list[str]:
    """The keys of `bucket`, from its stream's subjects (see `Bucket.keys`).

    `BusUnavailable` when the answer names no stream leader: in a cluster whose stream is
    electing one (ADR 0023), a replica answers from its own store, which nobody writes
    meanwhile, and there a bucket with a TTL (worker heartbeats) soon looks empty.
    """
    prefix = kv_subject(bucket)
    info = await js.stream_info(kv_stream(bucket), subjects_filter=f"{prefix}>")
    if info.cluster is not None and not info.cluster.leader:
        raise BusUnavailable(f"the {bucket} bucket's stream has no leader")
    subjects = info.state.subjects or {}
    return sorted(s[len(prefix) :] for s in subjects if s.startswith(prefix))
