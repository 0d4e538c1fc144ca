"""Registry calls on a REST path, bounded in time (ADR 0023).

In a NATS cluster a node's loss leaves each stream it led without a leader for 4-9 s (the Raft
election timeout compiled into nats-server). A KV write or a listing of a bucket meanwhile gets
no answer until JetStream's own timeout. Callers that answer a client use `within` to give up
after `BOUND` seconds, and then fall back: the worker keeps the write pending for its periodic
flush, the api serves the last good listing (`LastGood`) or what it wrote itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from kernelbus.errors import BusTimeout, BusUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

BOUND = 1.0
"""Seconds a registry call on a REST path waits for JetStream before its caller falls back."""

UNANSWERED = (BusUnavailable, BusTimeout)
"""What JetStream not answering in time looks like (`bus.translate`, `within`)."""


async def within(call: Awaitable[T], bound: float = BOUND) -> T:
    """`await call`, cancelled after `bound` seconds as a `BusTimeout`."""
    try:
        return await asyncio.wait_for(call, bound)
    except TimeoutError:
        raise BusTimeout(f"JetStream did not answer within {bound:g} s") from None


@dataclass
class LastGood(Generic[T]):
    """The last value a listing returned, served for up to `keep` seconds when a new listing
    gets no answer within `bound` (a stream electing its leader); without a recent one the
    listing waits as long as it takes, and its error propagates."""

    keep: float
    bound: float = BOUND
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    _value: tuple[float, T] | None = field(default=None, compare=False)

    def recent(self) -> T | None:
        if self._value is None or self.clock() - self._value[0] > self.keep:
            return None
        return self._value[1]

    async def get(self, fetch: Callable[[], Awaitable[T]], what: str = "listing") -> T:
        kept = self.recent()
        if kept is None:
            value = await fetch()
        else:
            try:
                value = await within(fetch(), self.bound)
            except UNANSWERED as exc:
                log.warning("%s: no answer (%s); serving the last one", what, exc.message)
                return kept
        self._value = (self.clock(), value)
        return value
