"""Where an execute round trip's time goes: to the kernel, in the kernel, and back.

The kernel dates every message it sends (`header.date`, the host's wall clock, µs), so on one
host a client can split each `1+1` round trip without instrumenting anything in between:

- request: the client's send -> the kernel's `busy` status (the path in, plus the kernel's
  receive and dispatch, the same on every side);
- kernel: `busy` -> `idle` (the kernel's own work, and how much the processes relaying its
  first messages slow it down on a machine with few cores);
- back: `idle`'s date -> its arrival at the client (the path out of the last message).

Sides, one round trip of each in turn: `kernelbus run` (v1 websocket), the empty relay of
`bench/relay_floor.py` (the same shape without Kernelbus's own work), and jupyter_client
straight over ZMQ.

    .venv/bin/python bench/hops.py [-n 500] [--env K=V ...]     # JSON to stdout
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import perf  # (the same Kernelbus launch and clients as the perf bench)
import relay_floor

from kernelbus.framing import pack_v1, unpack_v1

Dates = dict[str, tuple[float, float]]
"""Per message (`busy`, `execute_input`, `execute_result`, `execute_reply`, `idle`): the
kernel's date and the client's arrival time, both seconds of the wall clock."""


def wall(date: str | datetime) -> float:
    if isinstance(date, datetime):
        return date.timestamp()
    return datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp()


def kind_of(msg_type: str, content: dict[str, Any]) -> str:
    return str(content.get("execution_state")) if msg_type == "status" else msg_type


async def websocket_round_trip(ws: Any) -> tuple[float, Dates]:
    msg_id, msg = perf.request(
        "execute_request", {"code": "1+1", "silent": False, "store_history": False}
    )
    keys = ("header", "parent_header", "metadata", "content")
    parts = [json.dumps(msg[k]).encode() for k in keys]
    began = time.time()
    await ws.send(pack_v1("shell", parts))
    got: Dates = {}
    while "execute_reply" not in got or "idle" not in got:
        frame = await ws.recv()
        arrived = time.time()
        _, parts = unpack_v1(frame)
        if json.loads(parts[1]).get("msg_id") != msg_id:
            continue
        header = json.loads(parts[0])
        kind = kind_of(header["msg_type"], json.loads(parts[3]))
        got[kind] = (wall(header["date"]), arrived)
    return began, got


async def zmq_round_trip(kc: Any) -> tuple[float, Dates]:
    began = time.time()
    msg_id = kc.execute("1+1", store_history=False)
    got: Dates = {}
    while "execute_reply" not in got:
        reply = await kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            got["execute_reply"] = (wall(reply["header"]["date"]), time.time())
    while "idle" not in got:
        msg = await kc.get_iopub_msg(timeout=60)
        arrived = time.time()
        if msg["parent_header"].get("msg_id") == msg_id:
            kind = kind_of(msg["msg_type"], msg["content"])
            got[kind] = (wall(msg["header"]["date"]), arrived)
    return began, got


def summary(samples: list[tuple[float, Dates]]) -> dict[str, float]:
    def median_ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 3)

    return {
        "total_ms": median_ms([max(g["idle"][1], g["execute_reply"][1]) - t for t, g in samples]),
        "request_ms": median_ms([g["busy"][0] - t for t, g in samples]),
        "kernel_ms": median_ms([g["idle"][0] - g["busy"][0] for _, g in samples]),
        "back_ms": median_ms([g["idle"][1] - g["idle"][0] for _, g in samples]),
        "reply_back_ms": median_ms(
            [g["execute_reply"][1] - g["execute_reply"][0] for _, g in samples]
        ),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:

    env = dict(item.split("=", 1) for item in args.env)
    async with contextlib.AsyncExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hops-")))
        both = await relay_floor.kernelbus_and_relay(stack, root, env)
        kb, relay_ws = both.kernelbus, both.relay.ws

        clients, _ = await stack.enter_async_context(perf.direct_kernels(1))
        sides: dict[str, Callable[[], Awaitable[tuple[float, Dates]]]] = {
            "kernelbus": lambda: websocket_round_trip(kb.ws),
            "relay": lambda: websocket_round_trip(relay_ws),
            "direct": lambda: zmq_round_trip(clients[0]),
        }
        for round_trip in sides.values():
            for _ in range(30):
                await round_trip()
        samples: dict[str, list[tuple[float, Dates]]] = {name: [] for name in sides}
        for _ in range(args.n):
            for name, round_trip in sides.items():
                samples[name].append(await round_trip())
        return {"round_trips": args.n, "env": env, **{n: summary(s) for n, s in samples.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=500, help="round trips per side")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for Kernelbus")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args)), indent=1))


if __name__ == "__main__":
    main()
