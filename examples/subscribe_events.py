"""Follow Kernelbus events straight from the bus, validated against the published schemas.

    NATS_URL=nats://127.0.0.1:4222 python examples/subscribe_events.py [subject-filter]

The default filter `kb.events.>` receives every event; `kb.events.jupyter_server.>` only
jupyter_server's schemas, `kb.events.*.kernel_actions.*` only kernel actions. An ordered
ephemeral consumer: nothing to clean up, starts at new events (use `DeliverPolicy.ALL` to
replay the stream's history).
"""

from __future__ import annotations

import asyncio
import os
import sys

import nats
from nats.js.api import DeliverPolicy

from kernelbus.schemas import InvalidEvent, event_registry, parse_capsule


async def main(subject: str) -> None:
    registry = event_registry()
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    js = nc.jetstream()
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    try:
        async for msg in sub.messages:
            try:
                event = parse_capsule(registry, msg.data)
            except InvalidEvent as exc:
                print(f"invalid event on {msg.subject}: {exc}", file=sys.stderr)
                continue
            event_id = (msg.headers or {}).get("Kb-Event-Id", "?")
            print(event.timestamp, event.schema_id.rsplit("/", 2)[-2], event_id, event.data)
    finally:
        await nc.drain()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "kb.events.>"))
