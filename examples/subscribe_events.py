"""Follow Kernelbus events straight from the bus, validated against the published schemas.

    NATS_URL=nats://127.0.0.1:4222 NATS_USER=events-consumer NATS_PASSWORD=... \
        python examples/subscribe_events.py [subject-filter]

`make run` prints the URL and the read-only events consumer's NATS_USER / NATS_PASSWORD (also
in `.kernelbus/nats/credentials.json`); NATS_TLS_CA (and NATS_TLS_CERT / NATS_TLS_KEY) when
the bus serves TLS.

The default filter `kb.events.>` receives every event; `kb.events.jupyter_server.>` only
jupyter_server's schemas, `kb.events.*.kernel_actions.*` only kernel actions. An ordered
ephemeral consumer: nothing to clean up, starts at new events (use `DeliverPolicy.ALL` to
replay the stream's history).
"""

from __future__ import annotations

import asyncio
import sys

import nats
from nats.js.api import DeliverPolicy

from kernelbus.natsauth import CONSUMER_INBOX
from kernelbus.schemas import InvalidEvent, event_registry, parse_capsule
from kernelbus.settings import BusSettings


async def main(subject: str) -> None:
    registry = event_registry()
    settings = BusSettings()  # NATS_URL, NATS_USER, NATS_PASSWORD, NATS_TLS_*
    nc = await nats.connect(
        servers=settings.nats_url.split(","),
        user=settings.nats_user,
        password=settings.nats_password,
        tls=settings.nats_tls(),
        # The consumer may receive replies on its own inbox prefix only.
        inbox_prefix=CONSUMER_INBOX,
    )
    js = nc.jetstream()
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    print(f"following {subject}", file=sys.stderr, flush=True)
    try:
        async for msg in sub.messages:
            try:
                event = parse_capsule(registry, msg.data)
            except InvalidEvent as exc:
                print(f"invalid event on {msg.subject}: {exc}", file=sys.stderr)
                continue
            event_id = (msg.headers or {}).get("Kb-Event-Id", "?")
            print(
                event.timestamp,
                event.schema_id.rsplit("/", 2)[-2],
                event_id,
                event.data,
                flush=True,
            )
    finally:
        await nc.drain()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "kb.events.>"))
