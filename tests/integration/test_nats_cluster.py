"""A 3-node JetStream cluster under Kernelbus: buckets and streams are replicated 3 times, and
losing one node (SIGKILL) while a client executes loses nothing.

The killed node is the leader of the kernel registry's stream (the hardest node to lose: writes
wait for a new leader, 4-9 s of Raft election timeout in nats-server) and is the only node of
one service: the worker (its api replica stays connected and must be asked to re-attach) or the
api replica (the worker stays connected and must resend what found no subscriber). A cell
printing a counter across the kill gets every value once, in order; kernels started before are
listed after; events accepted (acknowledged) before are in the stream after; REST calls during
the election answer 503 with Retry-After, never 500. Recovery times: bench/RESULTS.md
(`bench/cluster.py`)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import nats
import nats.js.errors
import pytest
from channels_support import execute, of_request, open_socket
from cluster_support import jetstream_ready, registry_leader
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from kernelbus import events, subjects
from kernelbus.eventpublisher import EventPublisher
from kernelbus.natscluster import start_cluster
from kernelbus.testing.plugin import Services
from kernelbus_worker.sim.provisioner import SPEC_NAME, write_kernelspec

pytestmark = pytest.mark.integration

COUNTER = "import time\nfor i in range({n}):\n    print(i, flush=True)\n    time.sleep(0.1)\n"


async def _accepted_events(nc: Client, count: int) -> dict[str, int]:
    """Publish `count` events the way services do; event_id -> stream sequence of each one
    JetStream acknowledged."""
    publisher = EventPublisher(nc.jetstream(), source="test/cluster")
    accepted: dict[str, int] = {}
    for _ in range(count):
        data = {"worker_id": "cluster-test", "hostname": "h", "max_kernels": 1, "kernel_ids": []}
        event = publisher.build(events.WORKER_STARTED, data)
        ack = await nc.jetstream().publish(event.subject, event.payload, headers=event.headers)
        accepted[event.event_id] = ack.seq
    return accepted


def _printed(msgs: list[dict[str, object]], msg_id: str) -> list[int]:
    text = "".join(
        str(m["content"]["text"])  # type: ignore[index]
        for m in of_request(msgs, msg_id)
        if m["header"]["msg_type"] == "stream"  # type: ignore[index]
    )
    return [int(line) for line in text.split()]


@pytest.mark.parametrize("victim", ["worker", "api"])
async def test_losing_a_services_node_and_the_registry_leader_loses_nothing(
    tmp_path: Path, victim: str
) -> None:
    cluster = start_cluster(tmp_path / "cluster", 3)
    services = Services(tmp_path, cluster.urls)
    nc = await jetstream_ready(cluster)
    try:
        leader = await registry_leader(nc)
        other = (leader + 1) % 3
        # One URL each: the victim's service knows only the doomed node; it learns the
        # others from the server's INFO, as any client of a cluster does.
        urls = {
            "worker": cluster.nodes[leader if victim == "worker" else other].url,
            "api": cluster.nodes[leader if victim == "api" else other].url,
        }
        write_kernelspec(tmp_path / "jupyter")
        services.worker(env={"JUPYTER_PATH": str(tmp_path / "jupyter")}, nats_url=urls["worker"])
        api = services.api(nats_url=urls["api"])
        accepted = await _accepted_events(nc, 5)

        async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=30) as http:
            started = await http.post("/api/kernels", json={"name": "python3"})
            assert started.status_code == 201, started.text
            ids = [started.json()["id"]]
            for _ in range(2):
                started = await http.post("/api/kernels", json={"name": SPEC_NAME})
                assert started.status_code == 201, started.text
                ids.append(started.json()["id"])
            socket = await open_socket(api, ids[0])
            try:
                await socket.run("print(1)")
                total = 40
                counting = await socket.send(execute(COUNTER.format(n=total)))
                seen = await socket.until(lambda m: "5" in _text(m, counting), timeout=60)

                cluster.nodes[leader].process.kill()
                cluster.nodes[leader].process.wait()
                killed_at = time.monotonic()

                # Every value once, in order: nothing the kernel printed across the kill is
                # lost, repeated or reordered.
                seen += await socket.until_finished(counting, timeout=60)
                assert _printed(seen, counting) == list(range(total))

                # REST during the election: 503 with Retry-After, never 500, until new
                # starts (a registry write) succeed again.
                statuses: list[int] = []
                deadline = killed_at + 90
                while True:
                    assert time.monotonic() < deadline, f"no start within 90 s: {statuses}"
                    responses = [
                        await http.get("/api/kernels"),
                        await http.get(f"/api/kernels/{ids[1]}"),
                        await http.get("/api/sessions"),
                        await http.post("/api/kernels", json={"name": SPEC_NAME}),
                    ]
                    for response in responses:
                        statuses.append(response.status_code)
                        assert response.status_code in (200, 201, 503), response.text
                        if response.status_code == 503:
                            assert response.headers.get("Retry-After"), response.headers
                            assert response.json()["message"], response.text
                        if response.status_code == 200 and response.url.path == "/api/kernels":
                            assert set(ids) <= {k["id"] for k in response.json()}
                    if responses[-1].status_code == 201:
                        ids.append(responses[-1].json()["id"])
                        break
                    await asyncio.sleep(0.1)
                print(
                    f"\n{victim}'s node (the registry leader) killed: a start succeeded after "
                    f"{time.monotonic() - killed_at:.2f} s; statuses meanwhile "
                    f"{ {code: statuses.count(code) for code in sorted(set(statuses))} }"
                )

                # The websocket goes on (a short reply window per try: an input in flight
                # through the killed node is lost with it, as any core NATS message).
                while True:
                    assert time.monotonic() < deadline, "the websocket did not recover"
                    msg_id = await socket.send(execute("6 * 7"))
                    try:
                        got = await socket.until_finished(msg_id, timeout=5)
                    except TimeoutError:
                        continue
                    if any(m["header"]["msg_type"] == "execute_result" for m in got):
                        break
            finally:
                await socket.close()
            listed = await http.get("/api/kernels")
            assert set(ids) <= {k["id"] for k in listed.json()}
            for kernel_id in ids:
                assert (await http.delete(f"/api/kernels/{kernel_id}")).status_code == 204

        js = nc.jetstream()
        for event_id, seq in accepted.items():
            stored = await _stored(js, seq)
            assert (stored.headers or {}).get(events.EVENT_ID_HEADER) == event_id
            assert json.loads(stored.data or b"{}")
    finally:
        await nc.close()
        services.stop_all()
        cluster.stop()


async def _stored(js: JetStreamContext, seq: int) -> RawStreamMsg:
    """The events stream's message `seq`, once the stream answers: if its leader was on the
    killed node, it has none until nats-server elects one (a random 4-9 s, ADR 0018)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await js.get_msg(subjects.EVENTS_STREAM.name, seq)
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def _text(msg: dict[str, object], msg_id: str) -> str:
    if msg["parent_header"].get("msg_id") != msg_id:  # type: ignore[attr-defined]
        return ""
    if msg["header"]["msg_type"] != "stream":  # type: ignore[index]
        return ""
    return str(msg["content"]["text"])  # type: ignore[index]
