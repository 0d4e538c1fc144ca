"""The drained workers (`kb_drains`), read where kernels are placed (no api imports here)."""

from __future__ import annotations

import contextlib

import nats.js.errors
from nats.js.kv import KeyValue

from kernelbus.kvkeys import kv_keys


async def drained_workers(kv: KeyValue) -> set[str]:
    """Worker ids with a drain note (a purged key leaves a marker subject: `get` tells)."""
    drained = set()
    for key in await kv_keys(kv):
        with contextlib.suppress(nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            entry = await kv.get(key)
            if entry.value:
                drained.add(key)
    return drained
