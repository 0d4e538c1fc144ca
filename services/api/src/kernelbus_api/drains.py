"""Draining a worker: `POST /api/admin/workers/{id}/drain` makes the api place no new kernel
on it (its running kernels keep running, and keep being reachable); `DELETE` undoes it;
`GET /api/admin/workers` lists live workers with their load and drain state. The drained set
lives in the `kb_drains` KV bucket, so every api replica honours it."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from kernelbus.bus_kv import Bucket
from kernelbus.timefmt import jupyter_timestamp, utcnow
from kernelbus_api.auth import require_token
from kernelbus_api.deps import State
from kernelbus_api.drainset import drained_workers
from kernelbus_api.errors import error_response

router = APIRouter(dependencies=[Depends(require_token)], tags=["admin"])

_WORKER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _drains(state: Any) -> Bucket:
    kv: Bucket | None = state.kernels.drains
    assert kv is not None
    return kv


@router.get("/api/admin/workers")
async def list_workers(state: State) -> JSONResponse:
    """Live workers: id, host, capacity, running kernels, drained or not."""
    drained = await drained_workers(_drains(state))
    workers = [
        {
            "worker_id": w.worker_id,
            "hostname": w.hostname,
            "max_kernels": w.max_kernels,
            "running_kernels": w.running_kernels,
            "draining": w.worker_id in drained,
        }
        for w in sorted(await state.registry.live_workers(), key=lambda w: w.worker_id)
    ]
    return JSONResponse(workers)


@router.post("/api/admin/workers/{worker_id}/drain")
async def drain(state: State, worker_id: str = Path()) -> JSONResponse:
    """Place no new kernel on `worker_id` (its kernels keep running). Idempotent."""
    if not _WORKER_ID.match(worker_id):
        return error_response(400, "invalid worker id")
    await _drains(state).put(worker_id, jupyter_timestamp(utcnow()).encode())
    return JSONResponse({"worker_id": worker_id, "draining": True})


@router.delete("/api/admin/workers/{worker_id}/drain")
async def undrain(state: State, worker_id: str = Path()) -> JSONResponse:
    """Let `worker_id` take new kernels again. Idempotent."""
    if not _WORKER_ID.match(worker_id):
        return error_response(400, "invalid worker id")
    await _drains(state).purge(worker_id)
    return JSONResponse({"worker_id": worker_id, "draining": False})
