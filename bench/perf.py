"""Issue 15's benchmark, in one run: Kernelbus (`kernelbus run`), the direct jupyter_client/ZMQ
floor, and Kernel Gateway 3.0.1 (bench-only venv, `bench/kg_venv.sh`).

Clients speak only HTTP + websocket to the two gateways; iopub rate limits are off in both.
Figures: execute round trip; 20 clients on 20 kernels at once; 5 and 20 MB `display_data` in
the legacy and v1 websocket protocols; CPU-seconds per 1,000 round trips of the gateway's own
processes (kernels excluded; 1,000 round trips a side in blocks that take turns); 20
concurrent starts; warm-pool starts (Kernelbus); a second burst of 20 starts after the first
one. The machine is shared: compare ratios of one run.

    .venv/bin/python bench/perf.py                 # everything (~5-10 min), JSON to stdout
    .venv/bin/python bench/perf.py --only kernelbus,direct
    .venv/bin/python bench/perf.py --profile bench/out/profiles   # py-spy of api and worker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from websockets.asyncio.client import ClientConnection, connect

from kernelbus.framing import V1_PROTOCOL, legacy_to_v1, pack_v1, unpack_v1
from kernelbus.natsserver import free_port
from kernelbus.processes import wait_for
from kernelbus.testing.embedded import EmbeddedRun
from kernelbus.testing.reaper import command_line, descendants, kill_tree

HERE = Path(__file__).parent
BIG = {"5MB": 5_000_000, "20MB": 20_000_000}
CLIENTS = 20
Msg = tuple[str, dict[str, Any], dict[str, Any]]  # msg_type, content, parent_header


def percentiles(samples: list[float]) -> dict[str, float]:
    if len(samples) < 2:
        return {"p50": samples[0], "p95": samples[0], "n": len(samples)}
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": statistics.median(samples), "p95": qs[94], "n": len(samples)}


# --- a websocket client in either protocol ---------------------------------------------------


def request(msg_type: str, content: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": msg_type,
        "username": "bench",
        "session": "bench",
        "version": "5.3",
        "date": "2026-01-01T00:00:00.000000Z",
    }
    return msg_id, {"header": header, "parent_header": {}, "metadata": {}, "content": content}


@dataclass
class WsClient:
    ws: ClientConnection
    v1: bool

    async def send(self, msg: dict[str, Any]) -> None:
        if self.v1:
            parts = [json.dumps(msg[k]).encode() for k in ("header", "parent_header")]
            parts += [json.dumps(msg[k]).encode() for k in ("metadata", "content")]
            await self.ws.send(pack_v1("shell", parts))
        else:
            await self.ws.send(json.dumps({**msg, "channel": "shell"}))

    async def recv(self) -> Msg:
        """One message, decoded once (as jupyter_client decodes what it receives)."""
        frame = await self.ws.recv()
        if self.v1:
            assert isinstance(frame, bytes)
            _, parts = unpack_v1(frame)
        elif isinstance(frame, str):
            msg = json.loads(frame)
            return msg["header"]["msg_type"], msg["content"], msg["parent_header"]
        else:
            _, parts = legacy_to_v1(frame)  # binary legacy frame: a message with buffers
        header = json.loads(parts[0])
        return header["msg_type"], json.loads(parts[3]), json.loads(parts[1])

    async def call(self, msg_type: str, content: dict[str, Any], done: str) -> list[Msg]:
        """Send a shell request; messages answering it until its reply (and, for execute,
        status idle) arrived."""
        msg_id, msg = request(msg_type, content)
        await self.send(msg)
        seen: list[Msg] = []
        reply, idle = False, msg_type != "execute_request"
        while not (reply and idle):
            kind, body, parent = await self.recv()
            if parent.get("msg_id") != msg_id:
                continue
            seen.append((kind, body, parent))
            reply = reply or kind == done
            idle = idle or (kind == "status" and body.get("execution_state") == "idle")
        return seen

    async def execute(self, code: str) -> list[Msg]:
        return await self.call(
            "execute_request",
            {"code": code, "silent": False, "store_history": False},
            "execute_reply",
        )

    async def kernel_info(self) -> None:
        await self.call("kernel_info_request", {}, "kernel_info_reply")


@dataclass
class Gateway:
    """Kernelbus or Kernel Gateway, spoken to over HTTP + websocket only."""

    name: str
    url: str
    token: str
    cpu_pids: Callable[[], dict[str, list[int]]]
    pooled: Callable[[], Awaitable[tuple[int | None, int | None]]] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=300)

    async def start(self, http: httpx.AsyncClient) -> str:
        response = await http.post("/api/kernels", json={"name": "python3"})
        response.raise_for_status()
        return str(response.json()["id"])

    @asynccontextmanager
    async def socket(self, kernel_id: str, v1: bool) -> AsyncIterator[WsClient]:
        url = self.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
        async with connect(
            f"{url}?session_id={uuid.uuid4().hex}",
            additional_headers=self.headers,
            subprotocols=[V1_PROTOCOL] if v1 else None,  # type: ignore[list-item]
            max_size=None,
            compression=None,
            open_timeout=120,
            # No client pings: a ping answered while the server waits to drain a large frame
            # trips an assertion in the websockets legacy protocol uvicorn runs (the socket
            # closes with 1011; found by this bench, ADR 0015).
            ping_interval=None,
        ) as ws:
            if v1 and ws.subprotocol != V1_PROTOCOL:
                raise RuntimeError(f"{self.name} did not select the v1 protocol")
            yield WsClient(ws, v1)

    async def ready_kernel(self, http: httpx.AsyncClient) -> tuple[str, float]:
        """POST, websocket, kernel_info_reply: the kernel id and the seconds it took."""
        began = time.perf_counter()
        kernel_id = await self.start(http)
        async with self.socket(kernel_id, v1=True) as client:
            await asyncio.wait_for(client.kernel_info(), 120)
        return kernel_id, time.perf_counter() - began


# --- the direct floor ------------------------------------------------------------------------


@asynccontextmanager
async def direct_kernels(count: int) -> AsyncIterator[tuple[list[AsyncKernelClient], list[float]]]:
    """`count` kernels started at once with jupyter_client; clients and seconds to ready."""
    managers = [AsyncKernelManager(kernel_name="python3") for _ in range(count)]
    clients: list[AsyncKernelClient] = []

    async def one(km: AsyncKernelManager) -> float:
        began = time.perf_counter()
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        clients.append(kc)
        await kc.wait_for_ready(timeout=120)
        return time.perf_counter() - began

    try:
        times = await asyncio.gather(*(one(km) for km in managers))
        yield clients, list(times)
    finally:
        for kc in clients:
            kc.stop_channels()
        await asyncio.gather(
            *(km.shutdown_kernel(now=True) for km in managers if km.has_kernel),
            return_exceptions=True,
        )


async def zmq_execute(kc: AsyncKernelClient, code: str) -> list[Msg]:
    msg_id = kc.execute(code, store_history=False)
    reply = await kc.get_shell_msg(timeout=120)
    while reply["parent_header"].get("msg_id") != msg_id:  # e.g. wait_for_ready's kernel_info
        reply = await kc.get_shell_msg(timeout=120)
    seen: list[Msg] = [("execute_reply", reply["content"], reply["parent_header"])]
    while True:
        msg = await kc.get_iopub_msg(timeout=120)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        seen.append((msg["msg_type"], msg["content"], msg["parent_header"]))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return seen


# --- measurements shared by the three ---------------------------------------------------------


def display_code(size: int) -> str:
    return f"display({{'text/plain': 'x' * {size}}}, raw=True)"


def check_display(seen: list[Msg], size: int) -> None:
    shown = [m for m in seen if m[0] == "display_data"]
    if len(shown) != 1 or len(shown[0][1]["data"]["text/plain"]) != size:
        raise RuntimeError(f"display_data of {size} bytes not received intact")


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    total = {}
    for role, numbers in pids.items():
        seconds = 0.0
        for pid in numbers:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = psutil.Process(pid).cpu_times()
                seconds += times.user + times.system
        total[role] = seconds
    return total


Execute = Callable[[str], Awaitable[list[Msg]]]


async def concurrent_round_trips(executes: list[Execute], rounds: int) -> list[float]:
    """Every client runs `rounds` round trips at once (after 3 each to warm up)."""
    gate = asyncio.Event()

    async def client(execute: Execute) -> list[float]:
        for _ in range(3):
            await execute("1+1")
        await gate.wait()
        samples = []
        for _ in range(rounds):
            began = time.perf_counter()
            await execute("1+1")
            samples.append((time.perf_counter() - began) * 1000)
        return samples

    tasks = [asyncio.create_task(client(e)) for e in executes]
    await asyncio.sleep(0.5)
    gate.set()
    results = await asyncio.gather(*tasks)
    return [s for r in results for s in r]


async def sample(execute: Execute, code: str) -> tuple[float, list[Msg]]:
    began = time.perf_counter()
    seen = await execute(code)
    return (time.perf_counter() - began) * 1000, seen


async def interleaved(
    gws: dict[str, Gateway], args: argparse.Namespace, out: dict[str, dict[str, Any]]
) -> None:
    """Round trips and large messages, one sample of each side in turn (A B C A B C ...), so
    that the shared machine's changing load falls on every side alike."""
    async with contextlib.AsyncExitStack() as stack:
        v1: dict[str, Execute] = {}
        legacy: dict[str, Execute] = {}
        for name, gw in gws.items():
            http = await stack.enter_async_context(gw.http())
            for table, is_v1 in ((v1, True), (legacy, False)):  # a kernel per socket
                kernel_id, _ = await gw.ready_kernel(http)
                stack.push_async_callback(http.delete, f"/api/kernels/{kernel_id}")
                client = await stack.enter_async_context(gw.socket(kernel_id, v1=is_v1))
                table[name] = client.execute
        if not args.profile:
            clients, _ = await stack.enter_async_context(direct_kernels(1))
            kc = clients[0]
            v1["direct"] = legacy["direct"] = lambda code: zmq_execute(kc, code)

        for execute in v1.values():
            for _ in range(10):
                await execute("1+1")
        rt: dict[str, list[float]] = {name: [] for name in v1}
        for _ in range(args.n):
            for name, execute in v1.items():
                rt[name].append((await sample(execute, "1+1"))[0])
        for name, samples in rt.items():
            out[name]["roundtrip_ms"] = percentiles(samples)
        # CPU: each gateway alone (its background work would otherwise be charged for the
        # time the other sides take), the same number of round trips, in blocks that take
        # turns (load from outside that comes and goes falls on both sides alike); enough
        # of them that psutil's 10 ms ticks do not matter.
        spent: dict[str, Counter[str]] = {name: Counter() for name in gws}
        blocks = max(1, args.cpu_blocks)
        per_block = max(1, args.cpu_rounds // blocks)
        for index in range(blocks):
            names = list(gws) if index % 2 == 0 else list(reversed(gws))
            for name in names:
                pids = gws[name].cpu_pids()
                before = cpu_seconds(pids)
                for _ in range(per_block):
                    await v1[name]("1+1")
                after = cpu_seconds(pids)
                for role, seconds in after.items():
                    spent[name][role] += seconds - before.get(role, 0.0)
        for name, seconds_by_role in spent.items():
            cpu = {role: s * 1000 / (per_block * blocks) for role, s in seconds_by_role.items()}
            cpu["total"] = sum(cpu.values())
            out[name]["cpu_s_per_1000_roundtrips"] = cpu
        out["cpu_round_trips_per_side"] = per_block * blocks

        if args.profile:
            with profiling(gws["kernelbus"], args.profile, "20MB"):
                for _ in range(3):
                    check_display(await v1["kernelbus"](display_code(20_000_000)), 20_000_000)
        for label, size in BIG.items():
            code = display_code(size)
            got: dict[tuple[str, str], list[float]] = {}
            for i in range(args.big + 1):  # the first round warms the kernels' string cache
                for proto, table in (("v1", v1), ("legacy", legacy)):
                    for name, execute in table.items():
                        if name == "direct" and proto == "legacy":
                            continue
                        ms, seen = await sample(execute, code)
                        check_display(seen, size)
                        if i:
                            got.setdefault((name, proto), []).append(ms)
            for (name, proto), samples in got.items():
                key = "display_ms" if name == "direct" else f"display_{proto}_ms"
                out[name].setdefault(key, {})[label] = percentiles(samples)


async def bursts_and_clients(
    gws: dict[str, Gateway], args: argparse.Namespace, out: dict[str, dict[str, Any]]
) -> None:
    """20 concurrent starts on each side in turn; then 20 clients on those 20 kernels, the
    sides taking turns in blocks; then (gateways) a second burst after the first one."""
    async with contextlib.AsyncExitStack() as stack:
        executes: dict[str, list[Execute]] = {}
        https = {name: await stack.enter_async_context(gw.http()) for name, gw in gws.items()}
        for name, gw in gws.items():
            figures, ids = await burst(gw, https[name])
            out[name]["burst_1"] = figures
            for kernel_id in ids:
                stack.push_async_callback(https[name].delete, f"/api/kernels/{kernel_id}")
            clients = [await stack.enter_async_context(gw.socket(k, v1=True)) for k in ids]
            executes[name] = [c.execute for c in clients]
        if not args.profile:
            began = time.perf_counter()
            kcs, times = await stack.enter_async_context(direct_kernels(CLIENTS))
            out["direct"]["burst"] = {
                "all_ready_ms": (time.perf_counter() - began) * 1000,
                **without_n(percentiles([t * 1000 for t in times])),
            }
            executes["direct"] = [
                (lambda code, kc=kc: zmq_execute(kc, code))  # type: ignore[misc]
                for kc in kcs
            ]
        if args.profile:
            with profiling(gws["kernelbus"], args.profile, "20clients"):
                await concurrent_round_trips(executes["kernelbus"], args.rounds)
        got: dict[str, list[float]] = {name: [] for name in executes}
        blocks = 3
        for _ in range(blocks):
            for name, execute in executes.items():
                got[name] += await concurrent_round_trips(execute, max(1, args.rounds // blocks))
        for name, samples in got.items():
            out[name]["clients_20_ms"] = percentiles(samples)

    for name, gw in gws.items():
        async with gw.http() as http:
            if gw.pooled is not None:
                began = time.perf_counter()
                pooled = await wait_pool(gw, CLIENTS, timeout=args.refill_wait)
                out[name]["pool_before_burst_2"] = {
                    "kernels": pooled,
                    "waited_s": time.perf_counter() - began,
                }
            out[name]["burst_2"], ids = await burst(gw, http)
            await asyncio.gather(*(http.delete(f"/api/kernels/{k}") for k in ids))


async def warm_starts(gw: Gateway, args: argparse.Namespace) -> dict[str, Any]:
    """Sequential starts, each once the pool is at its target (no refill in progress)."""
    warm = []
    async with gw.http() as http:
        for _ in range(args.warm):
            await wait_pool(gw, None)
            kernel_id, seconds = await gw.ready_kernel(http)
            warm.append(seconds * 1000)
            await http.delete(f"/api/kernels/{kernel_id}")
    return percentiles(warm)


async def direct_starts(n: int) -> dict[str, float]:
    starts = []
    for _ in range(n):
        async with direct_kernels(1) as (_, times):
            starts.append(times[0] * 1000)
    return percentiles(starts)


def without_n(figures: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in figures.items() if k != "n"}


async def burst(gw: Gateway, http: httpx.AsyncClient) -> tuple[dict[str, Any], list[str]]:
    began = time.perf_counter()
    results = await asyncio.gather(*(gw.ready_kernel(http) for _ in range(CLIENTS)))
    figures = {
        "all_ready_ms": (time.perf_counter() - began) * 1000,
        **without_n(percentiles([s * 1000 for _, s in results])),
    }
    return figures, [k for k, _ in results]


async def wait_pool(gw: Gateway, want: int | None, timeout: float = 120) -> int:
    """Wait until the gateway's pool holds `want` kernels (None: its own target), or for
    `timeout`; return what it holds."""
    assert gw.pooled is not None
    deadline = time.monotonic() + timeout
    while True:
        have, target = await gw.pooled()
        goal = target if want is None else want
        if (have or 0) >= (goal or 0) or time.monotonic() > deadline:
            return have or 0
        await asyncio.sleep(0.1)


# --- the two gateways' processes ---------------------------------------------------------------


def roles(root: int, table: dict[str, str]) -> dict[str, list[int]]:
    """Descendants of `root` (and itself) by role; kernels (ipykernel) left out."""
    found: dict[str, list[int]] = {}
    for pid in {root} | descendants(root):
        line = command_line(pid)
        if "ipykernel" in line:
            continue
        role = next((r for key, r in table.items() if key in line), "other")
        found.setdefault(role, []).append(pid)
    return found


KB_ROLES = {
    "nats-server": "nats-server",
    "keeper": "keeper",
    "kernelbus-api": "api",
    "kernelbus-worker": "worker",
    "kernelbus-culler": "culler",
    "kernelbus-events": "events",
    "kernelbus run": "launcher",
}


@asynccontextmanager
async def kernelbus(root: Path, env: dict[str, str]) -> AsyncIterator[Gateway]:
    metrics_port = free_port()
    run = EmbeddedRun(
        root / "kernelbus",
        token="bench-token",
        extra_env={
            "KERNELBUS_LIMIT_RATE": "false",
            "KERNELBUS_WORKER_METRICS_PORT": str(metrics_port),
            "KERNELBUS_LOG_LEVEL": "WARNING",
            # A burst of 20 may grow the warm pool to 20 (the default maximum is 4).
            "KERNELBUS_WORKER_POOL_MAX": str(CLIENTS),
            **env,
        },
    )

    async def pooled() -> tuple[int | None, int | None]:
        """The worker's pooled kernels and pool target, from its /metrics."""
        async with httpx.AsyncClient(timeout=10) as http:
            try:
                text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
            except httpx.HTTPError:
                return None, None
        found = []
        for series in ("kernelbus_worker_pooled_kernels", "kernelbus_worker_pool_target"):
            match = re.search(rf"^{series} (\S+)$", text, re.M)
            found.append(int(float(match.group(1))) if match else None)
        return found[0], found[1]

    try:
        run.start()
        assert run.process is not None
        pid = run.process.pid
        yield Gateway("kernelbus", run.url, run.token, lambda: roles(pid, KB_ROLES), pooled)
    finally:
        run.kill()


def launch_kernel_gateway(root: Path, env: dict[str, str], port: int, token: str) -> Any:
    """Kernel Gateway 3.0.1 from the bench-only venv, iopub rate limits off."""
    script = subprocess.run(
        ["bash", str(HERE / "kg_venv.sh")], check=True, capture_output=True, text=True
    )
    venv = Path(script.stdout.strip().splitlines()[-1])
    with open(root / "kg.log", "w") as log:
        return subprocess.Popen(
            [
                str(venv / "bin" / "jupyter-kernelgateway"),
                "--KernelGatewayApp.ip=127.0.0.1",
                f"--KernelGatewayApp.port={port}",
                f"--KernelGatewayApp.auth_token={token}",
                "--ZMQChannelsWebsocketConnection.limit_rate=False",
                "--KernelGatewayApp.log_level=WARN",
            ],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@asynccontextmanager
async def kernel_gateway(root: Path, env: dict[str, str]) -> AsyncIterator[Gateway]:
    port = free_port()
    token = "bench-token"
    process = launch_kernel_gateway(root, env, port, token)
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"kernel gateway exited: {(root / 'kg.log').read_text()}")
            try:
                headers = {"Authorization": f"token {token}"}
                return httpx.get(f"{url}/api", headers=headers, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "kernel gateway")
        yield Gateway(
            "kernel_gateway", url, token, lambda: roles(process.pid, {"kernelgateway": "kg"})
        )
    finally:
        kill_tree({process.pid} | descendants(process.pid))


# --- profiles (py-spy from the bench-only venv) -----------------------------------------------


@contextlib.contextmanager
def profiling(gw: Gateway, out: Path, label: str) -> Iterator[None]:
    """py-spy record of the api and the worker for the duration of the block."""
    venv = HERE / ".venv-kg"
    out.mkdir(parents=True, exist_ok=True)
    recorders = []
    for role in ("api", "worker"):
        for pid in gw.cpu_pids().get(role, []):
            target = out / f"{label}-{role}.txt"
            recorders.append(
                (
                    subprocess.Popen(
                        [
                            str(venv / "bin" / "py-spy"),
                            "record",
                            "-p",
                            str(pid),
                            "--format",
                            "raw",
                            "-r",
                            "200",
                            "-o",
                            str(target),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ),
                    target,
                )
            )
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        for recorder, _ in recorders:
            recorder.send_signal(2)  # SIGINT: py-spy writes its file and exits
        for recorder, target in recorders:
            recorder.wait(60)
            print(summarise(target), file=sys.stderr)


def summarise(path: Path, top: int = 25) -> str:
    """Own and total sample shares per function of a py-spy raw (collapsed stacks) file."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        if any("select" in f and "base_events" in f for f in frames[-2:]):
            own["<idle in the event loop's select>"] += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    rows = [f"== {path.name}: {samples} samples; own% / total% =="]
    for frame, n in own.most_common(top):
        rows.append(f"{100 * n / samples:5.1f} own  {frame}")
    for frame, n in total.most_common(top):
        rows.append(f"{100 * n / samples:5.1f} tot  {frame}")
    return "\n".join(rows)


# --- the run ------------------------------------------------------------------------------------


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    kb, kg, direct = (result.get(k) for k in ("kernelbus", "kernel_gateway", "direct"))
    table: dict[str, Any] = {}

    def pair(name: str, a: float | None, b: float | None) -> None:
        if a is not None and b is not None:
            table[name] = round(a / b, 3)

    def get(d: dict[str, Any] | None, *path: str) -> float | None:
        for key in path:
            if not isinstance(d, dict) or key not in d:
                return None
            d = d[key]
        return d  # type: ignore[return-value]

    for ref_name, ref in (("direct", direct), ("kg", kg)):
        for q in ("p50", "p95"):
            pair(
                f"roundtrip_{q}/{ref_name}", get(kb, "roundtrip_ms", q), get(ref, "roundtrip_ms", q)
            )
            pair(
                f"clients_20_{q}/{ref_name}",
                get(kb, "clients_20_ms", q),
                get(ref, "clients_20_ms", q),
            )
        for size in BIG:
            for proto in ("legacy", "v1"):
                reference = (
                    get(ref, "display_ms", size, "p50")
                    if ref_name == "direct"
                    else get(ref, f"display_{proto}_ms", size, "p50")
                )
                pair(
                    f"display_{size}_{proto}_p50/{ref_name}",
                    get(kb, f"display_{proto}_ms", size, "p50"),
                    reference,
                )
        burst_ref = "burst" if ref_name == "direct" else "burst_1"
        pair(
            f"burst_1_all_ready/{ref_name}",
            get(kb, "burst_1", "all_ready_ms"),
            get(ref, burst_ref, "all_ready_ms"),
        )
        pair(
            f"burst_2_all_ready/{ref_name}",
            get(kb, "burst_2", "all_ready_ms"),
            get(ref, burst_ref, "all_ready_ms"),
        )
    for q in ("p50", "p95"):
        pair(
            f"warm_start_{q}/direct_start_p50",
            get(kb, "warm_start_ms", q),
            get(direct, "start_ms", "p50"),
        )
        pair(f"warm_start_{q}/kg_burst_p50", get(kb, "warm_start_ms", q), get(kg, "burst_1", "p50"))
    pair(
        "cpu_per_roundtrip/kg",
        get(kb, "cpu_s_per_1000_roundtrips", "total"),
        get(kg, "cpu_s_per_1000_roundtrips", "total"),
    )
    return table


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=300, help="sequential round trips")
    parser.add_argument("--rounds", type=int, default=30, help="round trips per client of 20")
    parser.add_argument(
        "--cpu-rounds", type=int, default=1000, help="round trips per side for the CPU figure"
    )
    parser.add_argument("--cpu-blocks", type=int, default=4, help="turns the CPU phase takes")
    parser.add_argument("--big", type=int, default=3, help="samples per large-message size")
    parser.add_argument("--warm", type=int, default=10, help="warm-pool start samples")
    parser.add_argument("--refill-wait", type=float, default=90, help="max s before burst 2")
    parser.add_argument("--only", default="direct,kernelbus,kernel_gateway")
    parser.add_argument("--profile", type=Path, help="py-spy api + worker into this directory")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for Kernelbus")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kernelbus-perf-"))
    # Kernels, ours and the references', keep out of the real home directory.
    isolation = {
        "HOME": str(root / "home"),
        "IPYTHONDIR": str(root / "ipython"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTER_DATA_DIR": str(root / "data"),
        "JUPYTER_CONFIG_DIR": str(root / "config"),
    }
    for value in isolation.values():
        os.makedirs(value, exist_ok=True)
    os.environ.update(isolation)
    only = args.only.split(",")
    result: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    out: dict[str, dict[str, Any]] = {name: {} for name in only if name != "direct"}
    if not args.profile:
        out["direct"] = {}
    async with contextlib.AsyncExitStack() as stack:
        gws: dict[str, Gateway] = {}
        if "kernelbus" in only:
            extra = dict(item.split("=", 1) for item in args.env)
            gws["kernelbus"] = await stack.enter_async_context(kernelbus(root, extra))
        if "kernel_gateway" in only and not args.profile:
            gws["kernel_gateway"] = await stack.enter_async_context(kernel_gateway(root, isolation))
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("round trips and large messages", lambda: interleaved(gws, args, out)),
            ("bursts and 20 clients", lambda: bursts_and_clients(gws, args, out)),
        ]
        if "kernelbus" in gws:

            async def warm() -> None:
                out["kernelbus"]["warm_start_ms"] = await warm_starts(gws["kernelbus"], args)

            steps.append(("warm-pool starts", warm))
        if not args.profile:

            async def starts() -> None:
                out["direct"]["start_ms"] = await direct_starts(args.warm)

            steps.append(("direct starts", starts))
        for label, step in steps:
            try:
                await step()
            except Exception as exc:  # the other figures are still worth having
                result.setdefault("errors", []).append(f"{label}: {exc!r}")
            print(f"{label} done", file=sys.stderr, flush=True)
    result.update(out)
    result["load_average_at_end"] = os.getloadavg()
    result["ratios"] = ratios(result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
