"""Version, health and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from kernelbus.errors import KernelbusError
from kernelbus_api.auth import require_token
from kernelbus_api.deps import State
from kernelbus_api.models import ErrorModel, HealthModel, VersionModel

JUPYTER_SERVER_VERSION = "2.21.1"
KERNELBUS_VERSION = "0.1.0"

router = APIRouter(dependencies=[Depends(require_token)])
open_router = APIRouter()
"""Unauthenticated: health probes and the OpenAPI document (as KG's swagger routes)."""

_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"model": ErrorModel}}


@router.get("/api", response_model=VersionModel, responses=_UNAUTHORIZED)
async def version() -> dict[str, str]:
    """The jupyter_server version Kernelbus is compatible with (as Kernel Gateway reports)."""
    return {"version": JUPYTER_SERVER_VERSION, "kernelbus": KERNELBUS_VERSION}


@open_router.get("/api/health/live", response_model=HealthModel)
async def live() -> dict[str, str]:
    """200 as long as the api process serves requests."""
    return {"status": "ok"}


@open_router.get(
    "/api/health/ready", response_model=HealthModel, responses={503: {"model": HealthModel}}
)
async def ready(state: State) -> JSONResponse:
    """200 when NATS is connected and at least one kernel worker is live; else 503 and why."""
    if not state.connectivity.connected or not state.nc.is_connected:
        reason = state.connectivity.reason() or "not connected to NATS"
        return JSONResponse({"status": "unavailable", "reason": reason}, 503)
    try:
        workers = await state.registry.live_workers()
    except KernelbusError as exc:
        reason = f"NATS JetStream is not answering ({exc.message})"
        return JSONResponse({"status": "unavailable", "reason": reason}, 503)
    if not workers:
        return JSONResponse({"status": "unavailable", "reason": "no live kernel worker"}, 503)
    return JSONResponse({"status": "ok", "reason": ""})


@open_router.get("/api/swagger.json", include_in_schema=False)
async def swagger(request: Request) -> JSONResponse:
    """The same OpenAPI document as `openapi.json`, at Kernel Gateway's path."""
    return JSONResponse(request.app.openapi())
