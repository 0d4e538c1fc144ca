"""The watch-fed registry view (`kernelbus.registryview`) against a real nats-server: it loads
what the buckets hold, follows writes from other clients, lists a write from another
connection as soon as that write returned (the barrier), and rebuilds after a reconnect."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from kernelbus import bus, natsserver
from kernelbus.models import KernelRecord
from kernelbus.natsserver import NatsServer
from kernelbus.registry import Registry
from kernelbus.settings import BusSettings

pytestmark = pytest.mark.integration


def _record(worker: str = "w1", user: str | None = None) -> KernelRecord:
    return KernelRecord(id=str(uuid.uuid4()), name="python3", worker_id=worker, username=user)


async def _open(url: str, name: str) -> tuple[Registry, object]:
    nc = await bus.connect(BusSettings(nats_url=url), name=name)
    js = nc.jetstream()
    await bus.ensure_infrastructure(js)
    return await Registry.open(js), nc


async def test_view_loads_existing_records_and_follows_writes_of_other_clients(
    fresh_nats: NatsServer,
) -> None:
    writer, writer_nc = await _open(fresh_nats.url, "view-writer")
    reader, reader_nc = await _open(fresh_nats.url, "view-reader")
    try:
        before = [_record() for _ in range(50)]
        for record in before:
            await writer.put_kernel(record)
        await writer.delete_kernel(before[0].id)
        await reader.start_view(reader_nc)  # type: ignore[arg-type]
        assert reader.view is not None and reader.view.kernels.ready.is_set()
        listed = {s.id for s in await reader.kernel_summaries()}
        assert listed == {r.id for r in before[1:]}

        # Read-your-writes across clients: each put/delete, once acknowledged to the writer,
        # is in the reader's next listing (no sleeping: the barrier waits for it).
        for _ in range(20):
            fresh = _record(user="ada")
            await writer.put_kernel(fresh)
            summaries = {s.id: s for s in await reader.kernel_summaries()}
            assert summaries[fresh.id].username == "ada"
            assert summaries[fresh.id].jupyter_model(2) == fresh.jupyter_model(2)
            await writer.delete_kernel(fresh.id)
            assert fresh.id not in {s.id for s in await reader.kernel_summaries()}

        updated = before[1].model_copy(update={"execution_state": "busy"})
        await writer.put_kernel(updated)
        states = {s.id: s.execution_state for s in await reader.kernel_summaries()}
        assert states[updated.id] == "busy"

        await writer.set_connections(before[2].id, "api-a", 2)
        await writer.set_connections(before[2].id, "api-b", 1)
        await _until(lambda: reader.view.connection_counts() == {before[2].id: 3})  # type: ignore[union-attr]
        assert await reader.connections_of(before[2].id) == 3
        await writer.set_connections(before[2].id, "api-a", 0)
        await _until(lambda: reader.view.connection_counts() == {before[2].id: 1})  # type: ignore[union-attr]
    finally:
        await reader.close_view()
        await bus.close(reader_nc)  # type: ignore[arg-type]
        await bus.close(writer_nc)  # type: ignore[arg-type]


async def test_empty_registry_is_ready_at_once(fresh_nats: NatsServer) -> None:
    reader, nc = await _open(fresh_nats.url, "view-empty")
    try:
        await reader.start_view(nc)  # type: ignore[arg-type]
        assert await reader.kernel_summaries() == []
        assert reader.view is not None and reader.view.connection_counts() == {}
    finally:
        await reader.close_view()
        await bus.close(nc)  # type: ignore[arg-type]


async def test_view_rebuilds_after_the_server_restarts(tmp_path: Path) -> None:
    store = tmp_path / "nats"
    port = natsserver.free_port()
    server = natsserver.start(store, port=port, log_file=tmp_path / "nats.log")
    reader_nc = writer_nc = None
    try:
        reader, reader_nc = await _open(server.url, "view-reader")
        writer, writer_nc = await _open(server.url, "view-writer")
        kept = _record()
        await writer.put_kernel(kept)
        await reader.start_view(reader_nc)  # type: ignore[arg-type]
        assert {s.id for s in await reader.kernel_summaries()} == {kept.id}

        server.stop()
        server = natsserver.start(store, port=port, log_file=tmp_path / "nats.log")
        # Both clients reconnect by themselves; a write after the restart must reach the view.
        added = _record()
        await _until_ok(lambda: writer.put_kernel(added))
        await writer.delete_kernel(kept.id)

        # The watcher itself (not the direct-read fallback) shows the writes after the restart.
        view = reader.view
        assert view is not None
        await _until(lambda: set(view.kernels.entries) == {added.id}, timeout=30)
        assert {s.id for s in await reader.kernel_summaries()} == {added.id}
        assert reader_nc.stats["reconnects"] >= 1  # type: ignore[attr-defined]
    finally:
        for nc in (reader_nc, writer_nc):
            if nc is not None:
                await bus.close(nc)  # type: ignore[arg-type]
        server.stop()


async def _until(condition: object, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _until_ok(action: object, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await action()  # type: ignore[operator]
            return
        except Exception:
            assert asyncio.get_running_loop().time() < deadline, "never succeeded"
            await asyncio.sleep(0.1)
