"""Helpers of the worker's unit tests."""

from __future__ import annotations

from typing import cast

import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager

from kernelbus.models import KernelRecord
from kernelbus_worker.kernel import ManagedKernel
from kernelbus_worker.outbox import Outbox
from kernelbus_worker.settings import WorkerSettings


def unbridged_kernel(kernel_id: str = "k1") -> ManagedKernel:
    """A kernel of worker `w1` whose bridge's sockets and publishing are never used."""
    record = KernelRecord(id=kernel_id, name="python3", worker_id="w1")
    return ManagedKernel(
        record,
        AsyncKernelManager(),
        WorkerSettings(id="w1"),
        cast(Outbox, None),
        cast(zmq.asyncio.Context, None),
    )
