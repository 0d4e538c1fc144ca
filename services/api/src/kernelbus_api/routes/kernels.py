"""Kernels: list, start, get, delete, interrupt, restart (PROTOCOLS §1.2-1.7)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from kernelbus_api.auth import bound_user, require_token
from kernelbus_api.body import json_body, openapi_body
from kernelbus_api.deps import KernelIdParam, KernelManager, Settings
from kernelbus_api.errors import error_response
from kernelbus_api.models import ErrorModel, KernelModel, StartKernelBody

router = APIRouter(dependencies=[Depends(require_token)], tags=["kernels"])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorModel} for code in (401, *codes)}


@router.get(
    "/api/kernels",
    response_model=list[KernelModel],
    response_model_exclude_none=True,
    responses=_errors(403),
)
async def list_kernels(kernels: KernelManager, settings: Settings) -> Any:
    """Every running kernel, across all workers; 403 when listing is turned off."""
    if not settings.list_kernels:
        return error_response(403, "Forbidden")
    # Pre-rendered: validating and encoding 10,000 models per request cost ~100 ms.
    return Response(await kernels.list_json(), media_type="application/json")


@router.post(
    "/api/kernels",
    status_code=201,
    response_model=KernelModel,
    response_model_exclude_none=True,
    responses=_errors(400, 403, 500, 503),
    openapi_extra=openapi_body(StartKernelBody),
)
async def start_kernel(
    kernels: KernelManager,
    settings: Settings,
    body: Annotated[StartKernelBody | None, Depends(json_body(StartKernelBody))],
    user: Annotated[str | None, Depends(bound_user)],
) -> JSONResponse:
    """Start a kernel on the least-loaded worker that can run it (201 + Location).

    A `kernel_id` that already exists answers 201 with that kernel and starts nothing.
    """
    record = await kernels.start(body or StartKernelBody(), user)
    model = await kernels.model(record)
    location = f"{settings.base_url}api/kernels/{record.id}"
    return JSONResponse(model, status_code=201, headers={"Location": location})


@router.get(
    "/api/kernels/{kernel_id}",
    response_model=KernelModel,
    response_model_exclude_none=True,
    responses=_errors(404),
)
async def get_kernel(kernel_id: KernelIdParam, kernels: KernelManager) -> Any:
    """One kernel's model; 404 `Kernel does not exist: {id}`."""
    return await kernels.model(await kernels.get(kernel_id))


@router.delete(
    "/api/kernels/{kernel_id}",
    status_code=204,
    response_class=Response,
    responses=_errors(404, 503, 504),
)
async def delete_kernel(kernel_id: KernelIdParam, kernels: KernelManager) -> Response:
    """Shut a kernel down; answers 204 once it has exited."""
    await kernels.shutdown(kernel_id)
    return Response(status_code=204)


@router.post(
    "/api/kernels/{kernel_id}/interrupt",
    status_code=204,
    response_class=Response,
    responses=_errors(404, 503, 504),
)
async def interrupt_kernel(kernel_id: KernelIdParam, kernels: KernelManager) -> Response:
    """Interrupt a kernel (SIGINT, or `interrupt_request` for `interrupt_mode: message`)."""
    await kernels.interrupt(kernel_id)
    return Response(status_code=204)


@router.post(
    "/api/kernels/{kernel_id}/restart",
    response_model=KernelModel,
    response_model_exclude_none=True,
    responses=_errors(404, 500, 503, 504),
)
async def restart_kernel(kernel_id: KernelIdParam, kernels: KernelManager) -> Any:
    """Restart a kernel and answer once the new one replied to `kernel_info`."""
    return await kernels.model(await kernels.restart(kernel_id))
