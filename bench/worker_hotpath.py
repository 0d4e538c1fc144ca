"""The worker's own per-message cost, in process: one iopub message delivered to the bus
(`_deliver_iopub`: activity, framing, connection table, publish) and one shell reply routed
to the connection that asked (`_route_reply`), with a publish that does nothing. No kernel,
no NATS: this isolates the code ADR 0020 moved (ManagedKernel -> bridge + connection table).

    .venv/bin/python bench/worker_hotpath.py                  # this tree
    .venv/bin/python bench/worker_hotpath.py --against 04440db   # and kernel.py before the split

With `--against REV` the kernel module of REV (a single-module `ManagedKernel`, before ADR
0020) is loaded from git next to this tree's, and the two are run interleaved (old, new, old,
new, ...), so machine load hits both alike. Prints µs per message: median and best of reps.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from jupyter_client.manager import AsyncKernelManager

from kernelbus.models import KernelRecord
from kernelbus_worker import kernel as this_tree
from kernelbus_worker.settings import WorkerSettings

KERNEL_PY = "services/kernel-worker/src/kernelbus_worker/kernel.py"


class NullOutbox:
    async def publish(self, subject: str, frame: bytes) -> None:
        return None


def message(i: int, msg_type: str) -> list[bytes]:
    common = {"session": "s", "username": "u", "date": "2026-01-01T00:00:00Z", "version": "5.3"}
    header = {"msg_id": f"m{i}", "msg_type": msg_type, **common}
    parent = {"msg_id": f"p{i}", "msg_type": "execute_request", **common}
    content = {"name": "stdout", "text": "x" * 40}
    return [json.dumps(x).encode() for x in (header, parent, {}, content)]


Side = tuple[
    Callable[[list[bytes]], Awaitable[None]],
    Callable[[str, list[bytes], str | None], Awaitable[None]],
    Any,
]


def side(module: ModuleType) -> Side:
    record = KernelRecord(id="k1", name="python3", worker_id="w1")
    settings = WorkerSettings(id="w1")
    k = module.ManagedKernel(record, AsyncKernelManager(), settings, NullOutbox(), None)
    if hasattr(k, "bridge"):  # after ADR 0020
        k.connections.attach("c1", "s1")
        return k.bridge._deliver_iopub, k.bridge._route_reply, k.bridge.routes
    k.attach("c1", "s1")
    return k._deliver_iopub, k._route_reply, k.routes


def load_from_git(rev: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{rev}:{KERNEL_PY}"], check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="kb-hotpath-")) / "kernel_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("kernel_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


async def measure(sides: dict[str, Side], n: int, reps: int) -> dict[str, dict[str, float]]:
    outputs = [message(i, "stream") for i in range(n)]
    replies = [message(i, "execute_reply") for i in range(n)]
    times: dict[str, dict[str, list[float]]] = {k: {"iopub": [], "reply": []} for k in sides}
    for _ in range(reps):
        for name, (deliver, route, routes) in sides.items():
            start = time.perf_counter()
            for parts in outputs:
                await deliver(parts)
            times[name]["iopub"].append((time.perf_counter() - start) / n * 1e6)
            for i in range(n):
                routes.remember(f"p{i}", "c1")
            start = time.perf_counter()
            for i, parts in enumerate(replies):
                await route("shell", parts, f"p{i}")
            times[name]["reply"].append((time.perf_counter() - start) / n * 1e6)
    return {
        name: {
            f"{what}_us_{stat}": round(fn(values), 2)
            for what, values in kinds.items()
            for stat, fn in (("median", statistics.median), ("best", min))
        }
        for name, kinds in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", help="git revision whose kernel.py to compare with")
    parser.add_argument("-n", type=int, default=30_000, help="messages per rep")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    sides: dict[str, Side] = {}
    if args.against:
        sides[args.against] = side(load_from_git(args.against))
    sides["this tree"] = side(this_tree)
    result = asyncio.run(measure(sides, args.n, args.reps))
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
