"""Sessions as jupyter_server shapes them, stored in KV so that every api replica sees them.

A session binds a path (notebook, console, file) to a kernel. The GatewayClient never calls
these routes (jupyter_server keeps its own sessions); they serve clients that talk to Kernelbus
directly. A session whose kernel is gone is pruned when read, as jupyter_server does.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from kernelbus.bus_kv import Bucket
from kernelbus.errors import BadRequest, NoSuchKernel
from kernelbus_api.kernels import Kernels
from kernelbus_api.models import SessionBody, StartKernelBody


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
        await self.kv.put(record.id, record.model_dump_json().encode())
        return await self.model(record)

    async def get(self, session_id: str) -> SessionRecord:
        record = await self._read(session_id)
        if record is None:
            raise NoSuchSession(f"Session not found: {session_id}")
        return record

    async def list_models(self) -> list[dict[str, Any]]:
        models = []
        for record in await self._records():
            with contextlib.suppress(NoSuchKernel):
                models.append(await self.model(record))
        return models

    async def update(
        self, session_id: str, body: SessionBody, user: str | None = None
    ) -> dict[str, Any]:
        """Change path, name, type or kernel; a replaced kernel no session uses is shut down."""
        record = await self.get(session_id)
        changes = body.model_dump(exclude_unset=True, exclude={"kernel", "notebook"})
        if body.kernel is not None:
            changes["kernel_id"] = await self._kernel_for(body, user)
        updated = record.model_copy(update={k: v for k, v in changes.items() if v is not None})
        await self.kv.put(updated.id, updated.model_dump_json().encode())
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
        records = [await self._read(key) for key in await self.kv.keys()]
        return [r for r in records if r is not None]

    async def _read(self, session_id: str) -> SessionRecord | None:
        entry = await self.kv.get(session_id)
        if entry is None:
            return None
        try:
            return SessionRecord.model_validate_json(entry.value)
        except ValidationError:
            return None

    async def _forget(self, session_id: str) -> None:
        await self.kv.purge(session_id)


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
