"""A worker crashes and is replaced, then the api replica its client was on dies while a cell
prints: the successor did not know the client's websocket (it was attached to the crashed
worker), so nothing kept the output produced until the client reconnected through another
replica — 59 of 300 values were lost under `make run`. Now a re-adopted kernel keeps its
output for its first attach (`ConnectionTable.buffer_unclaimed`), the successor asks the
replicas with websockets on it to re-attach them (`ApiLiveness.reclaim`), so that it keeps
their sessions' output when such a replica dies (ADR 0008), and what an attach replays counts
as sent to that connection (owed again if its replica dies before the client got it).
Without the first two, every value printed after the replica's death was missing (319 of 400
in one run); without the last, those the keeper kept while no worker ran (15-87 of 400).

Real nats-server, worker processes (crashed with SIGKILL, successor with the same id and
runtime dir), api processes, a real ipykernel kernel and websocket client."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels_support import execute, open_socket, start_kernel

from kernelbus import natsserver
from kernelbus.testing.plugin import Services

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

COUNT = 400


async def test_output_survives_a_worker_crash_then_the_api_replicas_loss(
    services: Services, fresh_nats: natsserver.NatsServer
) -> None:
    env = {"KERNELBUS_WORKER_ID": f"w-{uuid.uuid4().hex[:8]}"}
    crashed = services.worker(env, fresh_nats.url)
    first_api = services.api(nats_url=fresh_nats.url)
    kernel_id = await start_kernel(first_api)
    session = uuid.uuid4().hex
    sock = await open_socket(first_api, kernel_id, session_id=session)
    await sock.run("x = 41")
    code = (
        f"import time\nfor i in range({COUNT}):\n    print(i, flush=True)\n    time.sleep(0.05)\n"
    )
    msg_id = await sock.send(execute(code))
    values: list[int] = []
    seen: set[str] = set()

    async def take(until_values: int | None) -> bool:
        """Collect the cell's output; True once it replied and went idle."""
        replied = idle = False
        while not (replied and idle):
            msg = await sock.recv(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id or msg["header"]["msg_id"] in seen:
                continue
            seen.add(msg["header"]["msg_id"])
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                values.extend(int(v) for v in msg["content"]["text"].split())
                if until_values is not None and len(values) >= until_values:
                    return False
            replied = replied or kind == "execute_reply"
            idle = idle or (kind == "status" and msg["content"]["execution_state"] == "idle")
        return True

    await take(until_values=10)
    crashed.kill()
    # Returns once the successor is ready; in a thread, so that the client reads meanwhile.
    await asyncio.to_thread(services.worker, env, fresh_nats.url)
    await take(until_values=len(values) + 5)  # its output reaches the client again
    first_api.service.kill()
    at_kill = max(values)
    assert at_kill < COUNT - 40, "the cell ended before the api replica died"
    await sock.close()
    second_api = services.api(nats_url=fresh_nats.url)
    sock = await open_socket(second_api, kernel_id, session_id=session)
    assert await take(until_values=None)
    # Everything arrives: what was printed while no worker was connected (the keeper's
    # backfill, ADR 0014), what was sent to the replica as it died, and what came after.
    missing = sorted(set(range(COUNT)) - set(values))
    assert missing == [], f"{len(missing)} values lost (api replica died after {at_kill})"
    after = await sock.run("print(x + 1)")
    assert [m["content"]["text"] for m in after if m["header"]["msg_type"] == "stream"] == ["42\n"]
    await sock.close()
