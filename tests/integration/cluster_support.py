"""Helpers for tests on a local 3-node JetStream cluster (`kernelbus.natscluster`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import nats
import nats.errors
from nats.aio.client import Client

from kernelbus import bus, subjects
from kernelbus.natscluster import NatsCluster


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
