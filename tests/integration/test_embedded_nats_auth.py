"""The bus `kernelbus run` starts (kernelbus.natsauth) on a real nats-server configured exactly
as the launcher configures it: no anonymous client, a read-only events consumer, and each
service user limited to what its service needs. Compose's users (the same permissions.json)
run a whole kernel lifecycle in tests/integration/test_deploy_nats.py."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from kernelbus import bus, natsauth, natsserver, subjects
from kernelbus.settings import BusSettings

pytestmark = pytest.mark.integration


@dataclass
class Embedded:
    server: natsserver.NatsServer
    credentials: natsauth.Credentials
    directory: Path


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    directory = tmp_path_factory.mktemp("embedded") / "nats"
    credentials, extra = natsauth.server_config(directory)  # what the launcher does
    server = natsserver.start(directory, None, extra, log_file=directory / "nats.log")
    try:
        # Services create the streams and buckets at start-up; the worker's user may.
        asyncio.run(_infrastructure(server.url, credentials))
        yield Embedded(server, credentials, directory)
    finally:
        server.stop()


async def _infrastructure(url: str, credentials: natsauth.Credentials) -> None:
    env = credentials.env_for("kernelbus-worker")
    settings = BusSettings(
        nats_url=url, nats_user=env["NATS_USER"], nats_password=env["NATS_PASSWORD"]
    )
    nc = await bus.connect(settings, name="infra", role="worker")
    try:
        await bus.ensure_infrastructure(nc.jetstream(timeout=5))
    finally:
        await bus.close(nc)


@dataclass
class Errors:
    seen: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def first(self) -> str:
        """Permission errors arrive asynchronously: publish() itself never raises them."""
        await asyncio.wait_for(self.arrived.wait(), 10)
        return " | ".join(self.seen).lower()


@dataclass
class Login:
    nc: Client
    errors: Errors


async def login(embedded: Embedded, user: str, inbox: str | None = None) -> Login:
    errors = Errors()

    async def on_error(exc: Exception) -> None:
        errors.seen.append(str(exc))
        errors.arrived.set()

    nc = await nats.connect(
        embedded.server.url,
        user=user,
        password=embedded.credentials.passwords[user],
        inbox_prefix=inbox or bus.inbox_prefix(user),
        error_cb=on_error,
        allow_reconnect=False,
    )
    return Login(nc, errors)


@pytest.fixture
async def consumer(embedded: Embedded) -> AsyncIterator[Login]:
    client = await login(embedded, natsauth.CONSUMER_USER, natsauth.CONSUMER_INBOX)
    try:
        yield client
    finally:
        await client.nc.close()


def test_the_permissions_of_the_services_are_deploy_permissions_json() -> None:
    compose = json.loads(
        (Path(__file__).resolve().parents[2] / "deploy/nats/permissions.json").read_text()
    )["users"]
    users = natsauth.load_permissions()
    assert {u: users[u] for u in compose} == compose
    # Besides compose's services: the events consumer and the embedded launcher itself.
    assert set(users) == {*compose, natsauth.CONSUMER_USER, "launcher"}
    assert set(natsauth.SERVICE_USERS.values()) == {*compose, "launcher"}


def test_credentials_and_config_are_private_and_reused(embedded: Embedded) -> None:
    for path in (embedded.credentials.file, embedded.server.config_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(embedded.directory.stat().st_mode) == 0o700
    again, _ = natsauth.server_config(embedded.directory)
    assert again.passwords == embedded.credentials.passwords
    assert (
        embedded.credentials.passwords["api"] not in (embedded.directory / "nats.log").read_text()
    )


@pytest.mark.parametrize("user", [None, "api"])
async def test_anonymous_and_wrong_password_connects_are_refused(
    embedded: Embedded, user: str | None
) -> None:
    with pytest.raises((nats.errors.Error, OSError)) as refused:
        await nats.connect(
            embedded.server.url,
            user=user,
            password="wrong" if user else None,
            allow_reconnect=False,
            max_reconnect_attempts=1,
        )
    assert "authorization" in str(refused.value).lower()


async def test_the_consumer_follows_events_live_and_through_jetstream(
    embedded: Embedded, consumer: Login
) -> None:
    live = await consumer.nc.subscribe(f"{subjects.EVENTS_SUBJECT_PREFIX}.>")
    js = consumer.nc.jetstream(timeout=5)
    ordered = await js.subscribe(
        f"{subjects.EVENTS_SUBJECT_PREFIX}.>",
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
    )
    await consumer.nc.flush()
    publisher = await login(embedded, "api")
    try:
        subject = subjects.event_subject("https://events.example/test/probe/v1")
        await publisher.nc.jetstream(timeout=5).publish(subject, b'{"probe": 1}')
    finally:
        await publisher.nc.close()
    assert (await live.next_msg(timeout=10)).data == b'{"probe": 1}'
    assert (await ordered.next_msg(timeout=10)).data == b'{"probe": 1}'
    assert not consumer.errors.seen


@pytest.mark.parametrize(
    "subject",
    [
        "kb.kernel.k1.in",
        "kb.kernel.k1.cmd",
        "kb.kernel.k1.attach",
        "kb.kernel.k1.iopub",
        "kb.worker.w1.start",
        "kb.worker.w1.resource",
        "kb.conn.c1",
        "kb.events.forged.event.v1",
        "$KV.kb_kernels.k1",
    ],
)
async def test_the_consumer_cannot_publish(consumer: Login, subject: str) -> None:
    await consumer.nc.publish(subject, b"{}")
    await consumer.nc.flush()
    seen = await consumer.errors.first()
    assert "permissions violation for publish" in seen
    assert subject.lower() in seen


@pytest.mark.parametrize(
    "subject",
    ["kb.kernel.k1.iopub", "kb.kernel.*.iopub", "kb.kernel.>", "kb.conn.*", "_INBOX_api.>", ">"],
)
async def test_the_consumer_cannot_read_kernels(consumer: Login, subject: str) -> None:
    await consumer.nc.subscribe(subject)
    await consumer.nc.flush()
    assert "permissions violation for subscription" in await consumer.errors.first()


async def test_the_consumer_can_neither_read_the_registry_nor_touch_durables(
    consumer: Login,
) -> None:
    js = consumer.nc.jetstream(timeout=3)
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
        await js.key_value(subjects.KERNELS_BUCKET)
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
        await js.add_consumer(
            subjects.EVENTS_STREAM.name, ConsumerConfig(durable_name="kernelbus-events")
        )
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
        await js.delete_consumer(subjects.EVENTS_STREAM.name, "kernelbus-events")
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
        await js.purge_stream(subjects.EVENTS_STREAM.name)


# What each service must never do: the subjects other services own. (Everything each service
# does need is exercised by the e2e test of `kernelbus run` and test_deploy_nats.py.)
FORBIDDEN_PUBLISH = {
    "api": ["kb.conn.c1", "kb.kernel.k1.iopub", "$KV.kb_workers.w1", "$KV.kb_cull.k1"],
    "worker": ["kb.kernel.k1.in", "kb.kernel.k1.cmd", "kb.worker.w1.start", "$KV.kb_cull.k1"],
    # (the culler may publish iopub: a lost worker's kernels' `status: dead`)
    "culler": ["kb.kernel.k1.in", "kb.worker.w1.start", "kb.conn.c1"],
    "events": ["kb.kernel.k1.in", "kb.kernel.k1.cmd", "kb.worker.w1.start", "$KV.kb_kernels.k1"],
    "launcher": ["kb.kernel.k1.in", "kb.kernel.k1.cmd", "kb.worker.w1.start", "$KV.kb_kernels.k1"],
}
FORBIDDEN_SUBSCRIBE = {
    "api": ["kb.kernel.k1.in", "kb.worker.w1.start", "_INBOX_worker.>"],
    "worker": ["kb.conn.c1", "kb.kernel.k1.iopub", "_INBOX_api.>"],
    "culler": ["kb.kernel.k1.iopub", "kb.kernel.k1.in", "kb.events.>"],
    "events": ["kb.kernel.k1.iopub", "kb.kernel.k1.in", "_INBOX_culler.>"],
    "launcher": ["kb.kernel.k1.iopub", "kb.kernel.k1.in", "kb.events.>", "_INBOX_api.>"],
}


@pytest.mark.parametrize(
    ("user", "subject"), [(u, s) for u, subs in FORBIDDEN_PUBLISH.items() for s in subs]
)
async def test_a_service_cannot_publish_what_another_owns(
    embedded: Embedded, user: str, subject: str
) -> None:
    client = await login(embedded, user)
    try:
        await client.nc.publish(subject, b"{}")
        await client.nc.flush()
        seen = await client.errors.first()
    finally:
        await client.nc.close()
    assert "permissions violation for publish" in seen
    assert subject.lower() in seen


@pytest.mark.parametrize(
    ("user", "subject"), [(u, s) for u, subs in FORBIDDEN_SUBSCRIBE.items() for s in subs]
)
async def test_a_service_cannot_read_what_another_owns(
    embedded: Embedded, user: str, subject: str
) -> None:
    client = await login(embedded, user)
    try:
        await client.nc.subscribe(subject)
        await client.nc.flush()
        seen = await client.errors.first()
    finally:
        await client.nc.close()
    assert "permissions violation for subscription" in seen
