"""Helpers for tests on a local 3-node JetStream cluster (`kernelbus.natscluster`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
from nats.aio.client import Client

from kernelbus import bus, subjects
from kernelbus.natscluster import NatsCluster, start_cluster
from kernelbus.natsserver import NatsServer
from kernelbus.processes import ServiceProcess
from kernelbus.testing.plugin import ApiProcess, Services
from kernelbus_worker.sim.provisioner import write_kernelspec


async def jetstream_ready(cluster: NatsCluster, timeout: float = 60) -> Client:
    """A connection to the cluster once JetStream answers (its meta leader is elected)."""
    nc = await nats.connect(servers=cluster.urls.split(","))
    try:
        await bus.wait_for_jetstream(nc, timeout)
    except BaseException:
        await nc.close()
        raise
    return nc


async def registry_leader(nc: Client) -> int:
    """The buckets and streams as the services create them; the index of the node leading
    the kernel registry's stream."""
    js = nc.jetstream()
    await bus.ensure_infrastructure(js)
    deadline = time.monotonic() + 60
    while True:
        info = await js.stream_info(f"KV_{subjects.KERNELS_BUCKET}")
        if info.cluster is not None and info.cluster.leader:
            assert info.config.num_replicas == 3
            events_info = await js.stream_info(subjects.EVENTS_STREAM.name)
            assert events_info.config.num_replicas == 3
            return int(info.cluster.leader.rsplit("-", 1)[1])
        assert time.monotonic() < deadline, "the registry stream has no leader"
        await asyncio.sleep(0.2)


async def stream_leader(nc: Client, stream: str, timeout: float = 1.0) -> str | None:
    """The server name leading `stream`; None when nobody answers for it within `timeout`
    (no leader: the stream is electing one, or has no quorum)."""
    try:
        info = await nc.jetstream(timeout=timeout).stream_info(stream)
    except nats.errors.Error:
        return None
    return info.cluster.leader if info.cluster is not None and info.cluster.leader else None


async def lead_on(nc: Client, stream: str, server: str, timeout: float = 60) -> bool:
    """Ask `stream`'s leader to step down in favour of `server` (nats-server's preferred
    placement) until `server` leads it; False if it did not within `timeout`."""
    deadline = time.monotonic() + timeout
    request = json.dumps({"placement": {"preferred": server}}).encode()
    while time.monotonic() < deadline:
        leader = await stream_leader(nc, stream)
        if leader == server:
            return True
        if leader is not None:
            with contextlib.suppress(nats.errors.Error):
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=5)
        await asyncio.sleep(0.5)
    return False


async def every_stream_led(nc: Client, timeout: float = 90) -> None:
    """Wait until JetStream answers for every stream with a leader (after a node's loss)."""
    deadline = time.monotonic() + timeout
    js = nc.jetstream(timeout=2)
    while True:
        try:
            names = [info.config.name for info in await js.streams_info()]
            leaders = [await stream_leader(nc, name) for name in names if name]
            if names and all(leaders):
                return
        except nats.errors.Error:
            pass
        assert time.monotonic() < deadline, "some stream has had no leader for too long"
        await asyncio.sleep(0.5)


@dataclass
class Quorumless:
    """A 3-node cluster whose node leading the kernel registry (and the streams moved there)
    is about to be killed while the third node is paused, so that no stream it led can elect
    a leader until `resume` (rather than racing nats-server's random 4-9 s election timer).
    `nc`, the worker and the api are on the node that stays up (`kept`)."""

    cluster: NatsCluster
    services: Services
    nc: Client
    victim: NatsServer
    kept: NatsServer
    third: NatsServer
    worker_env: dict[str, str]
    worker: ServiceProcess
    api: ApiProcess
    paused: bool = False

    def lose_quorum(self) -> float:
        """Pause the third node, SIGKILL the victim; returns the monotonic time of the kill."""
        self.third.process.send_signal(signal.SIGSTOP)
        self.paused = True
        self.victim.process.kill()
        self.victim.process.wait()
        return time.monotonic()

    def resume(self) -> None:
        """The third node resumes: with the kept one it elects leaders again."""
        if self.paused:
            self.third.process.send_signal(signal.SIGCONT)
            self.paused = False

    async def leaderless(self, *streams: str) -> None:
        """Assert that none of `streams` has a leader (checked around every call)."""
        for stream in streams:
            assert await stream_leader(self.nc, stream) is None, f"{stream} has a leader"

    async def until_led(self, stream: str, deadline: float) -> None:
        while await stream_leader(self.nc, stream) is None:
            assert time.monotonic() < deadline, f"no leader of {stream} elected in time"
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def quorumless(
    root: Path, move_to_victim: tuple[str, ...] = (), required: tuple[str, ...] = ()
) -> AsyncIterator[Quorumless]:
    """`Quorumless` on a fresh cluster under `root`, with a worker (simulated kernelspec too)
    and an api; streams in `move_to_victim` are moved to the victim by a preferred step-down
    if they can be, those in `required` must be. Everything is stopped afterwards, also when
    the test failed."""
    cluster = start_cluster(root / "cluster", 3)
    services = Services(root, cluster.urls)
    arranged: Quorumless | None = None
    nc = await jetstream_ready(cluster)
    try:
        leader = await registry_leader(nc)
        victim_name = f"{cluster.name}-{leader}"
        for stream in move_to_victim:
            moved = await lead_on(nc, stream, victim_name)
            print(f"\n{stream} is led by the victim too: {moved}")
            assert moved or stream not in required, f"{stream} did not move to the victim"
        assert await stream_leader(nc, f"KV_{subjects.KERNELS_BUCKET}") == victim_name
        await nc.close()
        kept = cluster.nodes[(leader + 1) % 3]
        nc = await nats.connect(servers=[kept.url])
        write_kernelspec(root / "jupyter")
        worker_env = {
            "JUPYTER_PATH": str(root / "jupyter"),
            "KERNELBUS_WORKER_ID": f"quorumless-{uuid.uuid4().hex[:8]}",
        }
        worker = services.worker(env=worker_env, nats_url=kept.url)
        api = services.api(nats_url=kept.url)
        arranged = Quorumless(
            cluster,
            services,
            nc,
            cluster.nodes[leader],
            kept,
            cluster.nodes[(leader + 2) % 3],
            worker_env,
            worker,
            api,
        )
        yield arranged
    finally:
        if arranged is not None:
            arranged.resume()
        await nc.close()
        services.stop_all()
        cluster.stop()
