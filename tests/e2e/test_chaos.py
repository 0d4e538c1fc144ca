"""Chaos through the product path (`kernelbus run`): while a cell prints a counter every 0.1 s,
kill -9 the api, the worker, the culler, the events service and the nats-server, one at a time.

After each kill: the launcher replaced the process, REST answers again, the client (legacy
JSON websocket, reconnecting with the same session_id as JupyterLab does) received every
counter value in order with no gap (duplicates are counted and reported), and the same kernel
still holds `x = 41`. At the end every event in the stream is stored by the events service
exactly once, the launcher stops cleanly and no process is left.

One test with phases, not one test per process: a kernel whose worker was killed is
re-parented to the test process, which kills new children after every test. Recovery times
are printed (and measured by bench/chaos.py into bench/RESULTS.md); the waits here are generous
hang guards, not timing assertions.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kernelbus import events
from kernelbus.testing.chaos import (
    KernelClient,
    Phase,
    chaos_phase,
    sink_events,
    stream_event_ids,
)
from kernelbus.testing.embedded import EmbeddedRun

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TARGETS = (
    "kernelbus-api",
    "kernelbus-worker",
    "kernelbus-culler",
    "kernelbus-events",
    "nats-server",
)
COUNT = 250
"""Counter values per phase (25 s of output; the kill comes after the first 10). The cell
outlasts the replacement of any killed process (a worker's successor takes up to ~11 s on a
loaded machine): an `execute_reply` the kernel sends while no worker is connected is lost
(ADR 0014, "What is still lost"), and with a 12 s cell the worker phase then depended on
which came first (failed once in a clean-clone CI run)."""


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedRun]:
    run = EmbeddedRun(tmp_path)
    try:
        run.start()
        yield run
    finally:
        run.kill()


def check(phase: Phase) -> list[str]:
    """What is wrong with one phase's outcome (empty: nothing)."""
    problems = []
    if phase.values != list(range(COUNT)):
        missing = sorted(set(range(COUNT)) - set(phase.values))
        twice = sorted(v for v, n in Counter(phase.values).items() if n > 1)
        wrong = next(i for i, v in enumerate([*phase.values, None]) if v != i)
        problems.append(
            f"counter values not 0..{COUNT - 1} in order; missing {missing}, twice {twice}, "
            f"first out of place at {wrong}: {phase.values[max(0, wrong - 3) : wrong + 4]}"
        )
    if phase.rest is None:
        problems.append("REST did not answer again")
    if phase.ready is None:
        problems.append("the killed process was not replaced")
    if phase.state != "41\n":
        problems.append(f"x is not 41 any more: {phase.state!r}")
    return problems


def report(phase: Phase) -> str:
    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    return (
        f"{phase.target}: REST {s(phase.rest)}, replaced {s(phase.ready)}, output "
        f"{s(phase.output)}, recovery {s(phase.recovery)}; {len(phase.values)} values, "
        f"{phase.duplicates} duplicates, {phase.reconnects} reconnects"
    )


@pytest.mark.timeout(400)
async def test_any_one_process_can_die(
    embedded: EmbeddedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    async with httpx.AsyncClient(base_url=embedded.url, headers=embedded.headers) as http:
        created = await http.post("/api/kernels", json={"name": "python3"}, timeout=60)
        assert created.status_code == 201, created.text
    client = KernelClient(embedded.ws_url, created.json()["id"], embedded.headers)
    await client.connect(30)
    assert await client.run_text("x = 41\nprint(x)") == "41\n"
    failures: list[str] = []
    for target in TARGETS:
        embedded.census()
        try:
            phase = await chaos_phase(embedded, client, target, COUNT)
        except Exception as exc:  # report every phase, then fail
            failures.append(f"{target}: {type(exc).__name__}: {exc}")
            continue
        with capsys.disabled():
            print("\n" + report(phase))
        failures += [f"{target}: {problem}" for problem in check(phase)]
    await client.close()
    failures += await events_stored_exactly_once(embedded)
    assert embedded.process is not None
    embedded.interrupt()
    if (code := await asyncio.to_thread(embedded.process.wait, 60)) != 0:
        failures.append(f"kernelbus run exited with {code}")
    if left := embedded.wait_all_gone(10):
        failures.append(f"processes left behind: {left}")
    assert not failures, "\n".join(failures)


async def events_stored_exactly_once(run: EmbeddedRun) -> list[str]:
    """Every event in the stream is in the sink once, including one `service_restarted` per
    killed process."""
    streamed = await stream_event_ids(run)
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        stored = [e["id"] for e in await sink_events(run)]
        if set(streamed) <= set(stored) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    # The kernel still emits activity events meanwhile: what the sink holds is compared with
    # the stream as it is after the sink was read (a stored event is then in it, or wrong).
    streamed_after = await stream_event_ids(run)
    problems = []
    if missing := set(streamed) - set(stored):
        problems.append(f"{len(missing)} streamed events not stored")
    if extra := set(stored) - set(streamed_after):
        problems.append(f"{len(extra)} stored events not in the stream")
    if twice := [i for i, n in Counter(stored).items() if n > 1]:
        problems.append(f"stored more than once: {twice}")
    restarted = Counter(
        e["event"]["service"] for e in await sink_events(run, events.SERVICE_RESTARTED)
    )
    if restarted != Counter(TARGETS):
        problems.append(f"service_restarted events: {dict(restarted)}")
    return problems
