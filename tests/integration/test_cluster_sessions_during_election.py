"""Sessions go on while `kb_sessions`' stream has no leader (issue 14, ADR 0023, sessions).

Real 3-node nats-server cluster, real worker and api (both on one node, X), real kernels. The
node leading `KV_kb_kernels` is the victim; `KV_kb_sessions` is moved there by a preferred
step-down. The third node is paused (SIGSTOP) just before the victim is SIGKILLed, so that X
alone has no quorum and neither stream can elect a leader until the third node resumes; right
before and right after each call the test checks that both streams still have none.

Meanwhile: `POST /api/sessions` answers 201 (and starts its kernel), `GET /api/sessions` lists
it, `GET /api/sessions/{id}` finds it and the session created before the kill, `PATCH` renames
the earlier one, `DELETE` answers 204 and the session is no longer listed nor found. Once the
node resumes and leaders are elected, the api's pending session writes land: the bucket holds
exactly the earlier session, renamed.

`api-dies`: the api is SIGKILLed with its session writes pending (after creating one more
session): as ADR 0023 states, those writes are lost (the bucket holds the earlier session,
not renamed, and nothing else), while the lost session's kernel runs on and a new api lists it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from cluster_support import every_stream_led, quorumless

from kernelbus import subjects
from kernelbus.bus_kv import Bucket, kv_stream
from kernelbus_worker.sim.provisioner import SPEC_NAME

pytestmark = pytest.mark.integration

KERNELS = kv_stream(subjects.KERNELS_BUCKET)
SESSIONS = kv_stream(subjects.SESSIONS_BUCKET)


async def held_sessions(bucket: Bucket) -> dict[str, bytes]:
    held = {}
    for key in await bucket.keys():
        entry = await bucket.get(key)
        if entry is not None:
            held[key] = entry.value
    return held


TOOK: list[tuple[str, float]] = []


async def timed(
    http: httpx.AsyncClient, method: str, path: str, body: object = None
) -> httpx.Response:
    """`http`'s answer; how long it took goes to TOOK (printed, for bench/RESULTS.md)."""
    began = time.monotonic()
    response = await http.request(method, path, json=body)
    what = f"{method} {'/api/sessions/{id}' if path.count('/') > 2 else path}"
    TOOK.append((what, round(time.monotonic() - began, 2)))
    return response


@pytest.mark.parametrize("api_dies", [False, True], ids=["api-stays", "api-dies"])
async def test_sessions_go_on_while_their_stream_has_no_leader(
    tmp_path: Path, api_dies: bool
) -> None:
    TOOK.clear()
    async with quorumless(tmp_path, move_to_victim=(SESSIONS,), required=(SESSIONS,)) as arranged:
        nc, api, services = arranged.nc, arranged.api, arranged.services
        sessions = await Bucket.open(nc, subjects.SESSIONS_BUCKET)

        async def leaderless() -> None:
            await arranged.leaderless(SESSIONS, KERNELS)

        async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
            # Created and listed with a leader: also the api's last good listing.
            before = await http.post(
                "/api/sessions",
                json={"path": "before.ipynb", "type": "notebook", "kernel": {"name": SPEC_NAME}},
            )
            assert before.status_code == 201, before.text
            earlier = before.json()["id"]
            listed = await http.get("/api/sessions")
            assert [s["id"] for s in listed.json()] == [earlier], listed.text

            killed_at = arranged.lose_quorum()

            await leaderless()
            created = await timed(
                http,
                "POST",
                "/api/sessions",
                {"path": "during.ipynb", "type": "notebook", "kernel": {"name": "python3"}},
            )
            await leaderless()
            assert created.status_code == 201, created.text
            new = created.json()["id"]
            kernel_id = created.json()["kernel"]["id"]
            mine = set()  # sessions of the api-dies case, kept to the end
            if api_dies:  # while the api's list of live workers is recent (10 s: ADR 0023)
                lost = await http.post(
                    "/api/sessions",
                    json={"path": "lost.ipynb", "type": "notebook", "kernel": {"name": SPEC_NAME}},
                )
                await leaderless()
                assert lost.status_code == 201, lost.text
                lost_kernel = lost.json()["kernel"]["id"]
                mine = {lost.json()["id"]}

            listed = await timed(http, "GET", "/api/sessions")
            await leaderless()
            assert listed.status_code == 200, listed.text
            assert {s["id"] for s in listed.json()} == {earlier, new} | mine, listed.text

            for session_id in (new, earlier):
                got = await timed(http, "GET", f"/api/sessions/{session_id}")
                await leaderless()
                assert got.status_code == 200, got.text
                assert got.json()["id"] == session_id

            renamed = await timed(http, "PATCH", f"/api/sessions/{earlier}", {"name": "renamed"})
            await leaderless()
            assert renamed.status_code == 200, renamed.text
            assert renamed.json()["name"] == "renamed"

            deleted = await timed(http, "DELETE", f"/api/sessions/{new}")
            await leaderless()
            assert deleted.status_code == 204, deleted.text
            gone = await http.get(f"/api/sessions/{new}")
            await leaderless()
            assert gone.status_code == 404, gone.text
            listed = await http.get("/api/sessions")
            await leaderless()
            assert {(s["id"], s["name"]) for s in listed.json()} == {
                (earlier, "renamed"),
                *((session_id, None) for session_id in mine),
            }
            # Its kernel, no other session's, was shut down with it.
            got = await http.get(f"/api/kernels/{kernel_id}")
            await leaderless()
            assert got.status_code == 404, got.text
            print(f"\nall done without a leader, {time.monotonic() - killed_at:.2f} s: {TOOK}")

            if api_dies:
                # ADR 0023's stated limit: the api's pending session writes die with it, the
                # kernel of a session created meanwhile does not (its record is the worker's).
                api.service.kill()
                await leaderless()

            # The third node resumes: the two elect leaders; the pending writes land.
            arranged.resume()
            deadline = time.monotonic() + 90
            await arranged.until_led(SESSIONS, deadline)
            print(f"a leader elected {time.monotonic() - killed_at:.2f} s after the kill")
            if api_dies:
                await every_stream_led(nc)
                successor = services.api(nats_url=arranged.kept.url)
                async with httpx.AsyncClient(
                    base_url=successor.url, headers=successor.headers, timeout=60
                ) as fresh:
                    while (await fresh.get(f"/api/kernels/{lost_kernel}")).status_code != 200:
                        assert time.monotonic() < deadline, "the lost session's kernel is gone"
                        await asyncio.sleep(0.2)
                    held = await held_sessions(sessions)
                    assert set(held) == {earlier}, held  # neither the delete nor "lost"
                    assert b'"renamed"' not in held[earlier]  # nor the rename
                    listed = await fresh.get("/api/sessions")
                    assert [(s["id"], s["name"]) for s in listed.json()] == [(earlier, None)]
                    assert (await fresh.delete(f"/api/kernels/{lost_kernel}")).status_code == 204
                    assert (await fresh.delete(f"/api/sessions/{earlier}")).status_code == 204
                return
            while True:
                held = await held_sessions(sessions)
                if set(held) == {earlier} and b'"renamed"' in held[earlier]:
                    break
                assert time.monotonic() < deadline, f"the sessions bucket holds {held}"
                await asyncio.sleep(0.2)
            print(f"the pending writes landed {time.monotonic() - killed_at:.2f} s after the kill")

            listed = await http.get("/api/sessions")
            assert [(s["id"], s["name"]) for s in listed.json()] == [(earlier, "renamed")]
            assert (await http.delete(f"/api/sessions/{earlier}")).status_code == 204
            assert await held_sessions(sessions) == {}
