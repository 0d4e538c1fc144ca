"""Sessions as jupyter_server shapes them, stored in KV so that every api replica sees them.

A session binds a path (notebook, console, file) to a kernel. The GatewayClient never calls
these routes (jupyter_server keeps its own sessions); they serve clients that talk to Kernelbus
directly. A session whose kernel is gone is pruned when read, as jupyter_server does.

While `kb_sessions`' stream elects a leader (ADR 0023) no call here waits for it longer than
`BOUND`: a write JetStream does not take in time stays pending (`SessionWrites`) and the flush
task (`flush_forever`, run by the app's lifespan) writes it once JetStream answers; listings
fall back to the last good one (`LastGood`); this replica's own writes overlay both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from kernelbus.bounded import BOUND, UNANSWERED, LastGood, within
from kernelbus.bus_kv import Bucket, Entry
from kernelbus.errors import BadRequest, KernelbusError, NoSuchKernel
from kernelbus_api.kernels import Kernels
from kernelbus_api.models import SessionBody, StartKernelBody
from kernelbus_api.sessionwrites import GONE, Gone, SessionWrites

log = logging.getLogger(__name__)

LISTING_KEEP = 60.0
"""Seconds the last good listing of `kb_sessions` is served while its stream has no leader."""
FLUSH_INTERVAL = 0.5
"""Seconds between the flush task's tries to write pending session writes."""


class SessionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    path: str
    name: str | None = None
    type: str
    kernel_id: str


class NoSuchSession(NoSuchKernel):
    """A 404 like an unknown kernel (same HTTP status, own message)."""


@dataclass
class Sessions:
    kv: Bucket
    kernels: Kernels
    writes: SessionWrites[SessionRecord] = field(default_factory=SessionWrites)
    """This replica's session writes: pending ones (a stream without a leader) and notes its
    own reads apply until KV's listing shows them."""
    listed: LastGood[dict[str, SessionRecord]] = field(
        default_factory=lambda: LastGood(keep=LISTING_KEEP), compare=False
    )
    _writing: asyncio.Lock = field(default_factory=asyncio.Lock, compare=False)

    async def create(self, body: SessionBody, user: str | None = None) -> dict[str, Any]:
        """The session of `body.path`, created (with a kernel) unless it exists already."""
        path, mtype, name = _required(body)
        for record in await self._records():
            if record.path == path:
                return await self.model(record)
        kernel_id = await self._kernel_for(body, user)
        record = SessionRecord(
            id=str(uuid.uuid4()), path=path, name=name, type=mtype, kernel_id=kernel_id
        )
        await self._write(record.id, record)
        return await self.model(record)

    async def get(self, session_id: str) -> SessionRecord:
        record = await self._read(session_id)
        if record is None:
            raise NoSuchSession(f"Session not found: {session_id}")
        return record

    async def list_models(self) -> list[dict[str, Any]]:
        """Every session whose kernel exists; their kernels read concurrently (each read may
        wait `BOUND` for a stream without a leader: ADR 0023)."""
        models = await asyncio.gather(
            *(self.model(record) for record in await self._records()), return_exceptions=True
        )
        for model in models:
            if isinstance(model, BaseException) and not isinstance(model, NoSuchKernel):
                raise model
        return [model for model in models if isinstance(model, dict)]

    async def update(
        self, session_id: str, body: SessionBody, user: str | None = None
    ) -> dict[str, Any]:
        """Change path, name, type or kernel; a replaced kernel no session uses is shut down."""
        record = await self.get(session_id)
        changes = body.model_dump(exclude_unset=True, exclude={"kernel", "notebook"})
        if body.kernel is not None:
            changes["kernel_id"] = await self._kernel_for(body, user)
        updated = record.model_copy(update={k: v for k, v in changes.items() if v is not None})
        await self._write(updated.id, updated)
        if updated.kernel_id != record.kernel_id:
            await self._shutdown_if_unused(record.kernel_id)
        return await self.model(updated)

    async def delete(self, session_id: str) -> None:
        record = await self.get(session_id)
        await self._forget(session_id)
        await self._shutdown_if_unused(record.kernel_id)

    async def model(self, record: SessionRecord) -> dict[str, Any]:
        """jupyter_server's session model; prunes the session if its kernel is gone."""
        try:
            kernel = await self.kernels.model(await self.kernels.get(record.kernel_id))
        except NoSuchKernel:
            await self._forget(record.id)
            raise
        model: dict[str, Any] = {
            "id": record.id,
            "path": record.path,
            "name": record.name,
            "type": record.type,
            "kernel": kernel,
        }
        if record.type == "notebook":
            model["notebook"] = {"path": record.path, "name": record.name}
        return model

    async def _kernel_for(self, body: SessionBody, user: str | None = None) -> str:
        kernel = body.kernel or {}
        kernel_id, kernel_name = kernel.get("id"), kernel.get("name")
        if kernel_id:
            try:
                return (await self.kernels.get(str(kernel_id))).id
            except NoSuchKernel as exc:
                raise BadRequest(f"No such kernel: {kernel_id}") from exc
        start = StartKernelBody.model_validate({"name": kernel_name})
        return (await self.kernels.start(start, user)).id

    async def _shutdown_if_unused(self, kernel_id: str) -> None:
        if any(r.kernel_id == kernel_id for r in await self._records()):
            return
        with contextlib.suppress(NoSuchKernel):
            await self.kernels.shutdown(kernel_id)

    async def _records(self) -> list[SessionRecord]:
        """Every session: KV's listing (the last good one, within `BOUND`, when the stream
        does not answer) with this replica's own writes applied."""
        began: list[float] = []

        async def fetch() -> dict[str, SessionRecord]:
            started = self.writes.clock()
            records = await self._fetch()
            began.append(started)
            return records

        listing = await self.listed.get(fetch, "sessions listing")
        return list(self.writes.overlay(listing, began[0] if began else None).values())

    async def _fetch(self) -> dict[str, SessionRecord]:
        records: dict[str, SessionRecord] = {}
        for key in await self.kv.keys():
            record = self._parse(await self.kv.get(key))
            if record is not None:
                records[key] = record
        return records

    async def _read(self, session_id: str) -> SessionRecord | None:
        """This replica's own write first; else KV (a direct get any replica answers), and
        when that gets no answer within `BOUND`, the last good listing if it holds the session."""
        mine = self.writes.lookup(session_id)
        if mine is not None:
            return None if mine is GONE else mine
        try:
            entry = await within(self.kv.get(session_id))
        except UNANSWERED as exc:
            listing = self.listed.recent()
            if listing is not None and session_id in listing:
                log.info("session %s: KV not answering (%s); listed", session_id, exc.message)
                return listing[session_id]
            entry = await self.kv.get(session_id)
        return self._parse(entry)

    @staticmethod
    def _parse(entry: Entry | None) -> SessionRecord | None:
        if entry is None:
            return None
        try:
            return SessionRecord.model_validate_json(entry.value)
        except ValidationError:
            return None

    async def _forget(self, session_id: str) -> None:
        await self._write(session_id, GONE)

    async def _write(self, session_id: str, value: SessionRecord | Gone) -> None:
        """Put (or, GONE, purge) the session, waiting at most `BOUND` for JetStream; a write
        not taken in time stays pending for the flush task; another error fails the call and
        drops the write."""
        token = self.writes.note(session_id, value)
        try:
            await within(self.flush())
        except UNANSWERED as exc:
            log.info(
                "session %s: KV not answering (%s); write kept pending", session_id, exc.message
            )
        except BaseException:
            self.writes.retract(session_id, token)
            raise

    async def flush(self) -> None:
        """Write every pending session write, oldest first; stops at the first error."""
        async with self._writing:
            for session_id, value, token in self.writes.pending():
                if value is GONE:
                    await self.kv.purge(session_id)
                else:
                    await self.kv.put(session_id, value.model_dump_json().encode())
                self.writes.landed(session_id, token)

    async def flush_forever(self, interval: float = FLUSH_INTERVAL) -> None:
        """The flush task: pending session writes are written once JetStream answers."""
        while True:
            await asyncio.sleep(interval)
            if not self.writes.pending():
                continue
            try:
                await within(self.flush(), BOUND)
            except KernelbusError as exc:
                log.info("pending session writes not written yet: %s", exc.message)
            except Exception:
                log.exception("pending session writes not written yet")
            else:
                log.info("pending session writes written")


def _required(body: SessionBody) -> tuple[str, str, str | None]:
    """path, type and name; the old `{"notebook": {"path", "name"}}` form means a notebook."""
    fields: tuple[Any, Any, Any] = (body.path, body.type, body.name)
    if body.notebook is not None:
        fields = (body.notebook.get("path"), "notebook", body.notebook.get("name"))
    path, mtype, name = fields
    if not path:
        raise BadRequest("Missing field in JSON data: path")
    if not mtype:
        raise BadRequest("Missing field in JSON data: type")
    return str(path), str(mtype), None if name is None else str(name)
