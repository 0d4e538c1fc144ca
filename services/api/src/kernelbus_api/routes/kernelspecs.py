"""Kernelspecs: the union of what live workers can run, and their resource files."""

from __future__ import annotations

import base64
import binascii
import mimetypes
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response

from kernelbus import bus, subjects
from kernelbus.errors import InternalError, NoWorkerAvailable
from kernelbus.messages import GetResource, ResourceReply
from kernelbus_api import kernelspecs as specs
from kernelbus_api.auth import require_token
from kernelbus_api.deps import KernelRegistry, Settings, State
from kernelbus_api.models import ErrorModel, KernelspecModel, KernelspecsModel

router = APIRouter(dependencies=[Depends(require_token)], tags=["kernelspecs"])

SpecName = Annotated[str, Path(pattern=r"^[\w.\-%]+$", max_length=255)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorModel},
    404: {"model": ErrorModel},
}
_PNG_MAX_AGE = "max-age=2592000"


@router.get(
    "/api/kernelspecs", response_model=KernelspecsModel, responses={401: {"model": ErrorModel}}
)
async def list_kernelspecs(
    registry: KernelRegistry,
    settings: Settings,
    user: Annotated[str | None, Query(description="Tolerated; `alice/py` means spec `py`.")] = None,
) -> dict[str, Any]:
    """Every kernelspec some live worker can run, and the default kernel name."""
    found = specs.select(specs.union(await registry.live_workers()), user)
    return {
        "default": settings.default_kernel_name,
        "kernelspecs": {n: specs.spec_model(i, settings.base_url) for n, i in found.items()},
    }


@router.get("/api/kernelspecs/{name}", response_model=KernelspecModel, responses=_ERRORS)
async def get_kernelspec(name: SpecName, registry: KernelRegistry, settings: Settings) -> Any:
    """One kernelspec; 404 `Kernel spec {name} not found`."""
    info = specs.union(await registry.live_workers()).get(name)
    if info is None:
        raise HTTPException(404, f"Kernel spec {name} not found")
    return specs.spec_model(info, settings.base_url)


_RESOURCE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}},
    503: {"model": ErrorModel},
    **_ERRORS,
}


@router.head(
    "/kernelspecs/{name}/{file}",
    response_class=Response,
    responses=_RESOURCE,
    operation_id="head_kernelspec_resource",
)
@router.get(
    "/kernelspecs/{name}/{file}",
    response_class=Response,
    responses=_RESOURCE,
    operation_id="get_kernelspec_resource",
)
async def kernelspec_resource(name: SpecName, file: str, state: State) -> Response:
    """A kernelspec resource (logo, kernel.js, kernel.css), fetched from a worker that has it."""
    holders = specs.workers_with(await state.registry.live_workers(), name)
    if not holders:
        raise HTTPException(404, f"Kernel spec {name} not found")
    info = next(s for s in holders[0].kernelspecs if s.name == name)
    if file not in info.resource_files or specs.resource_key(file) is None:
        raise HTTPException(404)
    content, mime = await _fetch(state, holders, GetResource(kernel_name=name, file=file))
    headers = {"Cache-Control": _PNG_MAX_AGE} if mime == "image/png" else {}
    return Response(content, media_type=mime, headers=headers)


async def _fetch(state: State, holders: list[Any], command: GetResource) -> tuple[bytes, str]:
    """Ask each holder in turn: one that died since its last heartbeat has no responder."""
    for worker in holders:
        subject = subjects.worker_resource(worker.worker_id)
        try:
            timeout = state.settings.request_timeout
            reply = await bus.request(state.nc, subject, command, timeout, ResourceReply)
        except NoWorkerAvailable:
            continue
        return _decode(reply, command.file)
    raise NoWorkerAvailable(f"no live worker serves kernelspec {command.kernel_name}")


def _decode(reply: ResourceReply, file: str) -> tuple[bytes, str]:
    try:
        content = base64.b64decode(reply.content_b64, validate=True)
    except binascii.Error as exc:
        raise InternalError("a worker sent a malformed resource reply") from exc
    mime = reply.mime or mimetypes.guess_type(file)[0] or "application/octet-stream"
    return content, mime
