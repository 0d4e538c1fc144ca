"""The floor of Kernelbus's shape: how close to direct ZMQ can *any* gateway built as
kernel -> worker process -> nats-server -> api process -> websocket get on this machine?

Measured in one run, interleaved (one sample of each side in turn):
- direct: jupyter_client straight over ZMQ (issue 15's floor);
- relay: an empty relay of the same shape and the same libraries — a worker process (uvloop,
  zmq.asyncio, nats-py) that packs each kernel message as a v1 frame and publishes it, an
  nats-server (max_payload raised so that nothing is chunked), an api process (uvicorn with
  uvloop and websockets-sansio, a bare ASGI app) that sends each bus message to the
  websocket as it is; no registry, no routing, no replay buffer, no keeper, no metrics; the
  allocator kept as Kernelbus keeps it (ADR 0025);
- kernelbus: `kernelbus run` (as `bench/perf.py` starts it).

Figures: execute `1+1` round trip p50/p95, 5 and 20 MB `display_data` (v1 protocol), and CPU
per 1,000 round trips of each gateway's processes. The ratios of `relay` to `direct` are what
the issue-15 targets ask of a design with these hops; what Kernelbus adds to `relay` is its own
code's share (ADR 0026).

    .venv/bin/python bench/relay_floor.py [-n 300] [--big 8]     # JSON to stdout

The two relay roles run as `relay_floor.py worker CONNECTION_FILE NATS_URL` and
`relay_floor.py api PORT NATS_URL`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
IN, OUT = "relay.in", "relay.out"
RELAY_MAX_PAYLOAD = 64 * 1024 * 1024


# --- the relay's worker: ZMQ <-> NATS ---------------------------------------------------------


async def worker(info: dict[str, Any], nats_url: str) -> None:
    import nats
    import zmq
    import zmq.asyncio
    from jupyter_client.session import Session

    from kernelbus.framing import pack_v1, unpack_v1

    session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
    ctx = zmq.asyncio.Context()
    url = f"tcp://{info['ip']}:"
    shell = ctx.socket(zmq.DEALER)
    shell.connect(url + str(info["shell_port"]))
    iopub = ctx.socket(zmq.SUB)
    iopub.setsockopt(zmq.SUBSCRIBE, b"")
    iopub.connect(url + str(info["iopub_port"]))
    nc = await nats.connect(nats_url)

    async def from_client(msg: Any) -> None:
        _, parts = unpack_v1(msg.data)
        await shell.send_multipart([b"<IDS|MSG>", session.sign(parts[:4]), *parts], copy=False)

    async def pump(sock: zmq.asyncio.Socket, channel: str) -> None:
        while True:
            frames = await sock.recv_multipart()
            at = frames.index(b"<IDS|MSG>")
            await nc.publish(OUT, pack_v1(channel, frames[at + 2 :]))

    await nc.subscribe(IN, cb=from_client)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.gather(pump(iopub, "iopub"), pump(shell, "shell"))


# --- the relay's api: NATS <-> websocket ------------------------------------------------------


def api(port: int, nats_url: str) -> None:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        import nats

        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "websocket":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept", "subprotocol": "v1.kernel.websocket.jupyter.org"})
        nc = await nats.connect(nats_url)

        async def to_client(msg: Any) -> None:
            await send({"type": "websocket.send", "bytes": msg.data})

        await nc.subscribe(OUT, cb=to_client)
        await nc.flush()
        try:
            while True:
                event = await receive()
                if event["type"] == "websocket.disconnect":
                    return
                await nc.publish(IN, event.get("bytes") or b"")
        finally:
            await nc.close()

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ws_max_size=RELAY_MAX_PAYLOAD,
        ws_per_message_deflate=False,
        ws_ping_interval=None,
    )


# --- the bench --------------------------------------------------------------------------------


@contextlib.contextmanager
def relay(root: Path, connection_file: str) -> Iterator[dict[str, Any]]:
    """nats-server, the relay's worker and api, each stopped by its own pid."""
    import httpx

    from kernelbus.natsserver import find_binary, free_port
    from kernelbus.processes import terminate

    nport, aport = free_port(), free_port()
    conf = root / "relay-nats.conf"
    conf.write_text(f"listen: 127.0.0.1:{nport}\nmax_payload: {RELAY_MAX_PAYLOAD}\n")
    nats_url = f"nats://127.0.0.1:{nport}"
    me = [sys.executable, str(Path(__file__).resolve())]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen([find_binary(), "-c", str(conf)]))
        time.sleep(0.5)
        wproc = subprocess.Popen([*me, "worker", connection_file, nats_url], stdout=subprocess.PIPE)
        procs.append(wproc)
        assert wproc.stdout is not None
        if wproc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the relay worker did not start")
        procs.append(subprocess.Popen([*me, "api", str(aport), nats_url]))
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{aport}/")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield {
            "url": f"ws://127.0.0.1:{aport}/",
            "pids": {"nats-server": [procs[0].pid], "worker": [wproc.pid], "api": [procs[2].pid]},
        }
    finally:
        for proc in reversed(procs):
            terminate(proc, 10)


@dataclass
class Sides:
    """Kernelbus and the relay, each with a kernel and a v1 websocket that kernel_info crossed."""

    gateway: Any  # perf.Gateway (perf is imported once the bench's directory is on sys.path)
    kernelbus: Any  # perf.WsClient
    relay: Any  # perf.WsClient
    relay_pids: dict[str, list[int]]


async def kernelbus_and_relay(
    stack: contextlib.AsyncExitStack, root: Path, env: dict[str, str]
) -> Sides:
    """`kernelbus run` (`env` added) with one kernel, and the relay in front of a kernel of its
    own; everything stops, by pid, when `stack` closes."""
    import perf
    from jupyter_client.manager import AsyncKernelManager
    from websockets.asyncio.client import connect

    from kernelbus.framing import V1_PROTOCOL

    gw = await stack.enter_async_context(perf.kernelbus(root / "kb", env))
    http = await stack.enter_async_context(gw.http())
    kernel_id, _ = await gw.ready_kernel(http)
    stack.push_async_callback(http.delete, f"/api/kernels/{kernel_id}")
    kb = await stack.enter_async_context(gw.socket(kernel_id, v1=True))

    km = AsyncKernelManager(kernel_name="python3")
    await km.start_kernel()
    stack.push_async_callback(km.shutdown_kernel, now=True)
    side = stack.enter_context(relay(root, km.connection_file))
    ws = await stack.enter_async_context(
        connect(side["url"], subprotocols=[V1_PROTOCOL], max_size=None, ping_interval=None)  # type: ignore[list-item]
    )
    relay_client = perf.WsClient(ws, True)
    await asyncio.wait_for(relay_client.kernel_info(), 60)
    return Sides(gw, kb, relay_client, side["pids"])


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    import perf

    out: dict[str, Any] = {
        "load_average_at_start": os.getloadavg(),
        "direct": {},
        "relay": {},
        "kernelbus": {},
    }
    root = Path(tempfile.mkdtemp(prefix="relay-floor-"))
    async with contextlib.AsyncExitStack() as stack:
        sides = await kernelbus_and_relay(stack, root, {})
        clients, _ = await stack.enter_async_context(perf.direct_kernels(1))
        kc = clients[0]
        kb, rl, gw = sides.kernelbus, sides.relay, sides.gateway

        executes = {
            "direct": lambda code: perf.zmq_execute(kc, code),
            "relay": rl.execute,
            "kernelbus": kb.execute,
        }
        pids = {"relay": lambda: sides.relay_pids, "kernelbus": gw.cpu_pids}
        for execute in executes.values():
            for _ in range(20):
                await execute("1+1")
        rt: dict[str, list[float]] = {name: [] for name in executes}
        for _ in range(args.n):
            for name, execute in executes.items():
                rt[name].append((await perf.sample(execute, "1+1"))[0])
        for name, samples in rt.items():
            out[name]["roundtrip_ms"] = perf.percentiles(samples)
        for name, get_pids in pids.items():
            before = perf.cpu_seconds(get_pids())
            for _ in range(args.n):
                await executes[name]("1+1")
            after = perf.cpu_seconds(get_pids())
            cpu = {r: (s - before.get(r, 0.0)) * 1000 / args.n for r, s in after.items()}
            cpu["total"] = sum(cpu.values())
            out[name]["cpu_s_per_1000_roundtrips"] = cpu
        for label, size in perf.BIG.items():
            code = perf.display_code(size)
            got: dict[str, list[float]] = {name: [] for name in executes}
            for i in range(args.big + 1):  # the first round warms the kernels' string cache
                for name, execute in executes.items():
                    ms, seen = await perf.sample(execute, code)
                    perf.check_display(seen, size)
                    if i:
                        got[name].append(ms)
            for name, samples in got.items():
                out[name].setdefault("display_v1_ms", {})[label] = perf.percentiles(samples)
    out["load_average_at_end"] = os.getloadavg()
    out["ratios_to_direct"] = ratios(out)
    return out


def ratios(out: dict[str, Any]) -> dict[str, Any]:
    d = out["direct"]
    table: dict[str, Any] = {}
    for name in ("relay", "kernelbus"):
        s = out[name]
        table[name] = {
            "roundtrip_p50": s["roundtrip_ms"]["p50"] / d["roundtrip_ms"]["p50"],
            "roundtrip_p95": s["roundtrip_ms"]["p95"] / d["roundtrip_ms"]["p95"],
            **{
                f"{label}_v1_p50": s["display_v1_ms"][label]["p50"]
                / d["display_v1_ms"][label]["p50"]
                for label in s["display_v1_ms"]
            },
        }
    table["kernelbus_cpu_over_relay"] = (
        out["kernelbus"]["cpu_s_per_1000_roundtrips"]["total"]
        / out["relay"]["cpu_s_per_1000_roundtrips"]["total"]
    )
    return {
        k: {kk: round(vv, 3) for kk, vv in v.items()} if isinstance(v, dict) else round(v, 3)
        for k, v in table.items()
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("worker", "api"):
        from kernelbus.memory import DEFAULT_KEEP_BYTES, keep_freed_memory

        keep_freed_memory(DEFAULT_KEEP_BYTES)  # as Kernelbus's processes do (ADR 0025)
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        import uvloop

        uvloop.run(worker(json.loads(Path(sys.argv[2]).read_text()), sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "api":
        api(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="round trips per side")
    parser.add_argument("--big", type=int, default=8, help="large messages per size and side")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    print(json.dumps(asyncio.run(bench(args)), indent=1))


if __name__ == "__main__":
    main()
