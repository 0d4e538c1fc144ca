"""Warm pools: kernels started ahead of demand, per kernelspec, handed out on `StartKernel`.

A cold start spends ~0.3-0.5 s spawning the kernel and waiting for its first kernel_info; a
pooled kernel is ready. A pooled kernel was started before its client's request, so the
request's environment and working directory are applied inside the kernel when it is claimed
(`claim_code`); that needs a kernel whose language the worker can speak to, hence Python only.
Other kernelspecs always start cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kernelbus.messages import StartKernel
from kernelbus.models import KernelRecord
from kernelbus_worker.environment import build_kernel_env
from kernelbus_worker.factory import KernelFactory
from kernelbus_worker.kernel import ManagedKernel
from kernelbus_worker.poolsizes import PoolDemand, parse_pool_sizes

__all__ = ["WarmPool", "WarmStarts", "claim_code", "parse_pool_sizes"]

log = logging.getLogger(__name__)


def claim_code(env: dict[str, str], working_dir: str | None) -> str:
    """Python that gives a pooled kernel its client's environment and working directory.

    Values travel as one JSON string literal, so no value can become code.
    """
    lines = [
        "import json as _kb_json, os as _kb_os",
        f"_kb_os.environ.update(_kb_json.loads({json.dumps(json.dumps(env))}))",
    ]
    if working_dir:
        lines.append(f"_kb_os.chdir({json.dumps(working_dir)})")
    lines.append("del _kb_json, _kb_os")
    return "\n".join(lines)


Launcher = Callable[[str], Awaitable[ManagedKernel]]
Discarder = Callable[[ManagedKernel], Awaitable[None]]
Quiet = Callable[[], Awaitable[None]]


async def _no_wait() -> None:
    return None


@dataclass
class WarmPool:
    sizes: dict[str, int]
    launch: Launcher
    discard: Discarder
    ready: dict[str, list[ManagedKernel]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(kernels) for kernels in self.ready.values())

    def counts(self) -> dict[str, int]:
        return {name: len(kernels) for name, kernels in self.ready.items() if kernels}

    def take(self, name: str) -> ManagedKernel | None:
        kernels = self.ready.get(name)
        return kernels.pop(0) if kernels else None

    async def fill(
        self,
        room: Callable[[], int],
        targets: Callable[[], dict[str, int]] | None = None,
        quiet: Quiet = _no_wait,
    ) -> None:
        """Start missing pool kernels, one at a time, while `room()` says capacity is left;
        before each launch wait for `quiet()` (no start being served), then look again."""
        current = targets or (lambda: self.sizes)
        for name in self.sizes:
            kernels = self.ready.setdefault(name, [])
            while len(kernels) < current().get(name, 0) and room() > 0:
                await quiet()
                if len(kernels) >= current().get(name, 0) or room() <= 0:
                    break  # claimed or filled meanwhile: look again on the next refill
                try:
                    kernels.append(await self.launch(name))
                except Exception as exc:
                    log.warning("could not pre-start a %s kernel for the pool: %s", name, exc)
                    return

    async def shrink(self, targets: dict[str, int]) -> None:
        """Stop pooled kernels beyond their target (demand has fallen)."""
        for name, kernels in self.ready.items():
            while len(kernels) > targets.get(name, 0):
                await self.discard(kernels.pop())

    async def drain(self) -> None:
        for kernels in self.ready.values():
            while kernels:
                await self.discard(kernels.pop())


class WarmStarts:
    """The worker's warm pool: sized by recent demand (`PoolDemand`), kept filled within
    capacity, claimed by starts. Refills wait until no start is in flight (`busy`), so a
    pool kernel's launch never competes with the start being served."""

    def __init__(
        self,
        factory: KernelFactory,
        sizes: dict[str, int],
        room: Callable[[], int],
        busy: Callable[[], bool] = lambda: False,
    ):
        self.factory = factory
        self.pool = WarmPool(sizes, self._launch, factory.discard)
        settings = factory.settings
        self.demand = PoolDemand(sizes, settings.pool_max, settings.pool_demand_window)
        self.room = room
        self.busy = busy
        self.closed = False
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._filling = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.pool)

    def counts(self) -> dict[str, int]:
        return self.pool.counts()

    def targets(self) -> dict[str, int]:
        return self.demand.targets(time.monotonic())

    def starts_changed(self) -> None:
        """The supervisor's in-flight starts changed: refills go on only when none is left
        (then a refill is scheduled, for the demand that start added)."""
        if self.busy():
            self._quiet.clear()
            return
        self._quiet.set()
        self.refill_soon()

    def refill_soon(self) -> None:
        if not self.pool.sizes or self._filling.locked() or self.closed:
            return
        task = asyncio.get_running_loop().create_task(self.refill())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _room(self) -> int:
        return 0 if self.closed else self.room()

    async def _wait_quiet(self) -> None:
        while self.busy() and not self.closed:
            self._quiet.clear()
            # Woken by `starts_changed`; the timeout only guards against a missed call.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), 1.0)

    async def refill(self) -> None:
        """Top the pool up to its demand target while capacity is left (one filler at a
        time), and stop what is beyond it."""
        if not self.pool.sizes or self._filling.locked() or self.closed:
            return
        async with self._filling:
            await self.pool.fill(self._room, self.targets, self._wait_quiet)
            await self.pool.shrink(self.targets())

    async def drain(self) -> None:
        """Stop the pool for good (worker stopping): a refill under way ends after the launch
        it is in (that kernel is stopped too), none starts after."""
        self.closed = True
        self._quiet.set()
        async with self._filling:
            await self.pool.drain()

    async def claim(self, command: StartKernel) -> ManagedKernel | None:
        """A pooled kernel given the identity, environment and cwd `command` asks for."""
        self.demand.started(command.kernel_name, time.monotonic())
        kernel = self.pool.take(command.kernel_name)
        if kernel is None:
            return None
        kernel.relabel(
            KernelRecord(
                id=command.kernel_id,
                name=command.kernel_name,
                worker_id=kernel.record.worker_id,
                username=command.username,
                connection_info=kernel.record.connection_info,
                launch_env=command.env,
                working_dir=command.working_dir,
            )
        )
        try:
            await self._apply(kernel, command)
        except Exception as exc:
            kernel.log.warning("pooled kernel unusable (%s); starting cold", exc)
            await self.factory.discard(kernel)
            return None
        return kernel

    async def _apply(self, kernel: ManagedKernel, command: StartKernel) -> None:
        if not await kernel.km.is_alive():
            raise RuntimeError("pooled kernel died")
        language = (kernel.km.kernel_spec.language if kernel.km.kernel_spec else "") or ""
        env = build_kernel_env({}, {}, [], command.env, command.kernel_id, language)
        cwd = self.factory.working_dir(command, kernel)
        code = claim_code(env, cwd)
        await kernel.bridge.run_silently(code, min(10.0, command.launch_timeout))
        # A restart relaunches with jupyter_client's saved arguments: make them the claim's.
        kernel.km.update_env(env=env)
        launch_args: Any = kernel.km._launch_args
        if cwd and isinstance(launch_args, dict):
            launch_args["cwd"] = cwd

    async def _launch(self, name: str) -> ManagedKernel:
        record = KernelRecord(id=str(uuid.uuid4()), name=name, worker_id=self.factory.settings.id)
        kernel = self.factory.new(record)
        command = StartKernel(kernel_id=record.id, kernel_name=name)
        return await self.factory.launch(kernel, command, self.factory.settings.kernel_info_timeout)
