"""`KernelbusEventHandler` in a jupyter_events `EventLogger`, posting to a real events service."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from jupyter_events.logger import EventLogger

from kernelbus import events, natsserver
from kernelbus.schemas import load_event_schemas
from kernelbus.testing.events import EventsProcess, start_events_service
from kernelbus.testing.plugin import Services
from kernelbus_jupyter.events import KernelbusEventHandler

pytestmark = pytest.mark.integration


@pytest.fixture
def sink(services: Services, tmp_path: Path, fresh_nats: natsserver.NatsServer) -> EventsProcess:
    return start_events_service(services, tmp_path / "events.sqlite", nats_url=fresh_nats.url)


def _logger(handler: logging.Handler) -> EventLogger:
    logger = EventLogger()
    for schema in load_event_schemas():
        logger.register_event_schema(schema)
    logger.register_handler(handler)
    return logger


def _action(kernel_id: str) -> dict[str, str]:
    return {"action": "interrupt", "status": "success", "msg": "m", "kernel_id": kernel_id}


async def test_forwarded_events_are_stored_even_after_close(sink: EventsProcess) -> None:
    handler = KernelbusEventHandler(sink.url, token=sink.token)
    logger = _logger(handler)
    kernel_id = str(uuid.uuid4())
    logger.emit(schema_id=events.KERNEL_ACTIONS, data=_action(kernel_id))
    # logging.config.dictConfig closes every handler; jupyter_server does exactly that
    await asyncio.to_thread(handler.close)
    logger.emit(schema_id=events.KERNEL_ACTIONS, data=_action(kernel_id))
    await asyncio.to_thread(handler.flush)
    stored = await asyncio.to_thread(sink.wait_for_events, 2, kernel_id=kernel_id)
    assert [e["source"] for e in stored] == ["http", "http"]
    assert handler.sent == 2 and handler.failed == 0
    await asyncio.to_thread(handler.close)


async def test_a_refused_event_is_not_retried(sink: EventsProcess) -> None:
    handler = KernelbusEventHandler(sink.url, token="wrong", retries=50)
    logger = _logger(handler)
    logger.emit(schema_id=events.GATEWAY_CLIENT, data={"status": "success", "msg": "m"})
    await asyncio.to_thread(handler.flush)
    assert (handler.sent, handler.failed) == (0, 1)
    await asyncio.to_thread(handler.close)
    assert (await asyncio.to_thread(sink.stats))["stored"] == 0


async def test_events_wait_for_an_unreachable_service(
    services: Services, tmp_path: Path, fresh_nats: natsserver.NatsServer
) -> None:
    port = natsserver.free_port()
    handler = KernelbusEventHandler(f"http://127.0.0.1:{port}", token="t", retries=100)
    logger = _logger(handler)
    logger.emit(schema_id=events.GATEWAY_CLIENT, data={"status": "success", "msg": "late"})
    sink = await asyncio.to_thread(
        start_events_service, services, tmp_path / "e.sqlite", "t", fresh_nats.url, port=port
    )
    stored = await asyncio.to_thread(sink.wait_for_events, 1)
    assert stored[0]["event"]["msg"] == "late"
    await asyncio.to_thread(handler.close)
