"""Warm pools: kernels started ahead of demand, per kernelspec, handed out on `StartKernel`.

A cold start spends ~0.3-0.5 s spawning the kernel and waiting for its first kernel_info; a
pooled kernel is ready. A pooled kernel was started before its client's request, so the
request's environment and working directory are applied inside the kernel when it is claimed
(`claim_code`); that needs a kernel whose language the worker can speak to, hence Python only.
Other kernelspecs always start cold.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kernelbus_worker.kernel import ManagedKernel
from kernelbus_worker.poolsizes import parse_pool_sizes

__all__ = ["WarmPool", "claim_code", "parse_pool_sizes"]

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

    async def fill(self, room: Callable[[], int]) -> None:
        """Start missing pool kernels, one at a time, while `room()` says capacity is left."""
        for name, size in self.sizes.items():
            kernels = self.ready.setdefault(name, [])
            while len(kernels) < size and room() > 0:
                try:
                    kernels.append(await self.launch(name))
                except Exception as exc:
                    log.warning("could not pre-start a %s kernel for the pool: %s", name, exc)
                    return

    async def drain(self) -> None:
        for kernels in self.ready.values():
            while kernels:
                await self.discard(kernels.pop())
