"""Fuzzed bus payloads (hypothesis, seeded) on every command subject a service subscribes to
(kernelbus.subjects): the worker's start / resource / kernel command / attach / input
subjects, the api's ping, and the event stream the culler and the events service consume.
Each request gets an error reply (never `internal`, never a crash), and nothing changes: the
same kernels exist afterwards and the one kernel still runs code through the api. Bounded:
`max_examples` per subject, derandomized (same cases on every run)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats
import nats.errors
import pytest
from channels_support import open_socket
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from kernelbus import events, natsserver, subjects
from kernelbus.chunking import CHUNK_ID, CHUNK_POS
from kernelbus.messages import AttachConnection, kernel_command_adapter
from kernelbus.processes import wait_for
from kernelbus.testing.plugin import ApiProcess, Services, _http_ok

# The fuzzers, then `test_nothing_changed`: steps of one scenario, kept in file order when shuffled.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scenario]

T = TypeVar("T")
WORKER = "fuzz-worker"
API = "fuzz-api"
EXAMPLES = 40
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Loop:
    """An event loop in a thread of its own: hypothesis drives sync tests, nats-py is async."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Target:
    loop: Loop
    nc: Client
    api: ApiProcess
    services: Services
    kernel_id: str
    samples: dict[str, dict[str, Any]]
    """A real event envelope per subject seen on the stream (mutated by the event fuzzer)."""
    events_ready: str

    def request(self, subject: str, payload: bytes) -> dict[str, Any]:
        reply = self.loop.run(self.nc.request(subject, payload, timeout=30))
        answer: dict[str, Any] = json.loads(reply.data)
        return answer


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz-bus")
    server = natsserver.start(root / "nats", log_file=root / "nats.log")
    services = Services(root, server.url)
    loop = Loop()
    try:
        services.worker({"KERNELBUS_WORKER_ID": WORKER})
        api = services.api({"KERNELBUS_API_INSTANCE": API})
        events_ready = _event_consumers(services, root)
        with httpx.Client(base_url=api.url, headers=api.headers, timeout=60) as http:
            created = http.post("/api/kernels", json={"name": "python3"})
            assert created.status_code == 201, created.text
        nc = loop.run(nats.connect(server.url))
        try:
            samples = loop.run(_event_samples(nc))
            yield Target(loop, nc, api, services, created.json()["id"], samples, events_ready)
        finally:
            loop.run(nc.close())
    finally:
        loop.close()
        services.stop_all()
        server.stop()


def _event_consumers(services: Services, root: Path) -> str:
    """The culler and the events service, both consumers of the event stream."""
    health = natsserver.free_port()
    culler = services.spawn(
        "kernelbus-culler",
        {"KERNELBUS_CULLER_HEALTH_PORT": str(health), "KERNELBUS_CULLER_CULL_INTERVAL": "1"},
    )
    port = natsserver.free_port()
    events_env = {
        "KERNELBUS_EVENTS_PORT": str(port),
        "KERNELBUS_EVENTS_DB_PATH": str(root / "events.sqlite"),
    }
    events_service = services.spawn("kernelbus-events", events_env)
    live = f"http://127.0.0.1:{health}/health/live"
    wait_for(lambda: _http_ok(live), 60, "the culler", culler)
    ready = f"http://127.0.0.1:{port}/api/health/ready"
    wait_for(lambda: _http_ok(ready), 60, "the events service", events_service)
    return ready


async def _event_samples(nc: Client) -> dict[str, dict[str, Any]]:
    """One envelope per event subject stored so far (kernel start, activity, ...)."""
    js = nc.jetstream(timeout=10)
    sub = await js.subscribe(
        f"{subjects.EVENTS_SUBJECT_PREFIX}.>",
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    found: dict[str, dict[str, Any]] = {}
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=2)
            except nats.errors.TimeoutError:
                break
            found.setdefault(msg.subject, json.loads(msg.data))
    finally:
        await sub.unsubscribe()
    for schema in (events.KERNEL_ACTIVITY, events.WORKER_STOPPED):
        found.setdefault(subjects.event_subject(schema), {})
    return found


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


def mutations(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """A valid command with one field replaced, removed or added (random JSON value)."""
    keys = st.sampled_from([*base, "extra"])

    def mutate(key: str, value: Any, drop: bool) -> bytes:
        changed = dict(base)
        if drop:
            changed.pop(key, None)
        else:
            changed[key] = value
        return json.dumps(changed).encode()

    return st.builds(mutate, keys, json_values, st.booleans())


def payloads(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=2048),
        json_values.map(lambda v: json.dumps(v).encode()),
        mutations(base),
    )


NO_SUCH = "00000000-0000-4000-8000-000000000000"


def _changes_state(subject_kind: str, kernel_id: str, payload: bytes) -> bool:
    """A payload that happens to be a valid command for the real kernel is not fuzz."""
    try:
        if subject_kind == "cmd":
            return kernel_command_adapter.validate_json(payload).kernel_id == kernel_id
        if subject_kind == "attach":
            return AttachConnection.model_validate_json(payload).kernel_id == kernel_id
    except (ValidationError, ValueError):
        return False
    return False


def assert_error(answer: dict[str, Any]) -> None:
    assert answer.get("status") == "error", answer
    assert answer.get("code") != "internal", answer


def _start_base() -> dict[str, Any]:
    return {"command": "start", "kernel_id": NO_SUCH, "kernel_name": "no-such-spec"}


@FUZZ
@given(payload=payloads(_start_base()))
@example(payload=b"{" * 100_000)
@example(payload=json.dumps({**_start_base(), "env": {"LD_PRELOAD": "/tmp/x.so"}}).encode())
@example(payload=json.dumps({**_start_base(), "env": {"KERNEL_X": "a\nb"}}).encode())
def test_worker_start(target: Target, payload: bytes) -> None:
    assert_error(target.request(subjects.worker_start(WORKER), payload))


@FUZZ
@given(payload=payloads({"command": "resource", "kernel_name": "python3", "file": "x"}))
@example(payload=json.dumps({"kernel_name": "python3", "file": "../../etc/passwd"}).encode())
def test_worker_resource(target: Target, payload: bytes) -> None:
    answer = target.request(subjects.worker_resource(WORKER), payload)
    assert_error(answer)


@FUZZ
@given(payload=payloads({"command": "interrupt", "kernel_id": NO_SUCH}))
def test_kernel_command(target: Target, payload: bytes) -> None:
    if _changes_state("cmd", target.kernel_id, payload):
        return
    assert_error(target.request(subjects.kernel_command(target.kernel_id), payload))


@FUZZ
@given(
    payload=payloads(
        {"command": "attach", "kernel_id": NO_SUCH, "conn_id": "c", "session_id": "s"}
        | {"api_instance": API}
    )
)
def test_kernel_attach(target: Target, payload: bytes) -> None:
    if _changes_state("attach", target.kernel_id, payload):
        return
    assert_error(target.request(subjects.kernel_attach(target.kernel_id), payload))


@FUZZ
@given(
    payload=st.binary(max_size=4096) | json_values.map(lambda v: json.dumps(v).encode()),
    position=st.sampled_from(["1/2", "2/1", "0/0", "1/0", "-1/5", "a/b", "", "1/99999999"]),
)
def test_kernel_input(target: Target, payload: bytes, position: str) -> None:
    """Client input has no reply: garbage (and garbage chunk headers) is dropped; the checks
    after the run show that nothing broke."""
    subject = subjects.kernel_input(target.kernel_id)
    target.loop.run(_publish(target.nc, subject, payload, position))


async def _publish(nc: Client, subject: str, payload: bytes, position: str) -> None:
    await nc.publish(subject, payload)
    await nc.publish(subject, payload, headers={CHUNK_ID: "fuzz", CHUNK_POS: position})
    await nc.flush()


@FUZZ
@given(payload=st.binary(max_size=2048))
def test_api_ping(target: Target, payload: bytes) -> None:
    reply = target.loop.run(target.nc.request(subjects.api_ping(API), payload, timeout=30))
    assert reply.data is not None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LD_PRELOAD": "/tmp/evil.so"}, "LD_PRELOAD"),
        ({"NATS_PASSWORD": "x"}, "NATS_PASSWORD"),
        ({"KERNEL_X": "$(id)"}, "KERNEL_X"),
        ({"KERNEL_X": "a\nb"}, "KERNEL_X"),
        ({"BAD NAME": "x"}, "BAD NAME"),
        ({"KERNEL_X": "x" * 5000}, "KERNEL_X"),
        ({f"KERNEL_{i}": "x" for i in range(300)}, "At most"),
    ],
)
def test_the_worker_revalidates_the_env_of_a_start(
    target: Target, env: dict[str, str], named: str
) -> None:
    """Regression: the worker used to trust any env that arrived over the bus."""
    command = {"command": "start", "kernel_id": NO_SUCH, "kernel_name": "python3", "env": env}
    answer = target.request(subjects.worker_start(WORKER), json.dumps(command).encode())
    assert answer["code"] == "bad_request", answer
    assert named in answer["message"]
    for value in env.values():
        assert value not in answer["message"]  # never echoed


def test_an_attach_names_the_kernel_of_its_subject(target: Target) -> None:
    """Regression: an attach for kernel B sent on kernel A's subject attached to B."""
    with httpx.Client(base_url=target.api.url, headers=target.api.headers, timeout=60) as http:
        other = http.post("/api/kernels", json={"name": "python3"}).json()["id"]
        try:
            command = {
                "command": "attach",
                "kernel_id": other,
                "conn_id": "c1",
                "session_id": "s1",
                "api_instance": API,
            }
            subject = subjects.kernel_attach(target.kernel_id)
            answer = target.request(subject, json.dumps(command).encode())
            assert answer["code"] == "bad_request", answer
        finally:
            assert http.delete(f"/api/kernels/{other}").status_code == 204


@FUZZ
@given(data=st.data())
def test_event_stream(target: Target, data: st.DataObject) -> None:
    """Mutated real envelopes and garbage on the event subjects the culler and the events
    service consume (stored by JetStream first: each one reaches both)."""
    subject = data.draw(st.sampled_from(sorted(target.samples)), label="subject")
    base = target.samples[subject]
    payload = data.draw(
        st.one_of(
            st.binary(max_size=1024),
            json_values.map(lambda v: json.dumps(v).encode()),
            mutations(base) if base else st.just(b"{}"),
            st.builds(
                lambda key, value: json.dumps(
                    {**base, key: value} | {"__metadata_version__": 1}
                ).encode(),
                st.sampled_from(["__schema__", "__timestamp__", "kernel_id", "worker_id"]),
                json_values,
            ),
        ),
        label="payload",
    )
    target.loop.run(target.nc.jetstream(timeout=10).publish(subject, payload))


def test_nothing_changed(target: Target) -> None:
    """Runs after the fuzzers (file order): same kernels, the kernel works, nobody crashed."""
    with httpx.Client(base_url=target.api.url, headers=target.api.headers, timeout=60) as http:
        assert [k["id"] for k in http.get("/api/kernels").json()] == [target.kernel_id]
    outputs = asyncio.run(_run(target.api, target.kernel_id, "print(6 * 7)"))
    assert any(m["content"].get("text") == "42\n" for m in outputs), outputs
    assert _http_ok(target.events_ready)
    culler = next(p for p in target.services.started if p.name == "kernelbus-culler")
    assert "skipping invalid event" in culler.log()  # the event fuzz reached the consumers
    for process in target.services.started:
        assert process.alive(), process.log()[-3000:]
        assert "Traceback" not in process.log(), process.log()[-5000:]


async def _run(api: ApiProcess, kernel_id: str, code: str) -> list[dict[str, Any]]:
    socket = await open_socket(api, kernel_id)
    try:
        return await socket.run(code)
    finally:
        await socket.close()
