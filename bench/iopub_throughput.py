"""IOPub throughput: messages/s (`display(i)` x N) and MB/s (1 MB stream writes x M).

Kernelbus (HTTP + v1 websocket, rate limiting off) against a direct jupyter_client ZMQ
connection, in the same run. Usage: `python bench/iopub_throughput.py [--url U --token T]`
(a given api must run with KERNELBUS_LIMIT_RATE=false).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from stack import arguments, direct_kernel, kernel_socket, kernelbus, run, ws_execute, zmq_execute

MESSAGES = 5000
MEGABYTES = 200
MSGS_CODE = f"for i in range({MESSAGES}):\n    display(i)"
BYTES_CODE = (
    "import sys\n"
    f"for i in range({MEGABYTES}):\n"
    "    sys.stdout.write('x' * 1_000_000); sys.stdout.flush()"
)

Execute = Callable[[str], Awaitable[list[tuple[str, dict[str, Any], dict[str, Any]]]]]


async def measure(execute: Execute) -> dict[str, float]:
    await execute("1+1")
    start = time.perf_counter()
    seen = await execute(MSGS_CODE)
    msgs_s = sum(1 for m in seen if m[0] == "display_data") / (time.perf_counter() - start)
    start = time.perf_counter()
    seen = await execute(BYTES_CODE)
    nbytes = sum(len(m[1]["text"]) for m in seen if m[0] == "stream")
    assert nbytes == MEGABYTES * 1_000_000, nbytes
    return {"msgs_per_s": msgs_s, "mb_per_s": nbytes / 1e6 / (time.perf_counter() - start)}


async def main() -> None:
    args = arguments(__doc__ or "")
    env = {"KERNELBUS_LIMIT_RATE": "false"}
    async with kernelbus(args, env) as target, kernel_socket(target) as ws:
        via_kernelbus = await measure(lambda code: ws_execute(ws, code))
    async with direct_kernel() as kc:
        direct = await measure(lambda code: zmq_execute(kc, code))
    ratios = {k: via_kernelbus[k] / direct[k] for k in direct}
    print(json.dumps({"kernelbus": via_kernelbus, "direct_zmq": direct, "ratio": ratios}, indent=2))


if __name__ == "__main__":
    run(main())
