"""The drained workers (`kb_drains`), read where kernels are placed (no api imports here)."""

from __future__ import annotations

from kernelbus.bus_kv import Bucket


async def drained_workers(kv: Bucket) -> set[str]:
    """Worker ids with a drain note (a purged key leaves a marker subject: `get` tells)."""
    return {key for key in await kv.keys() if await kv.get(key) is not None}
