"""Every error the api answers, as `{"message", "reason"}`, mapped in this one module.

Domain errors (`kernelbus.errors`) carry a stable code; this table turns it into an HTTP status.
`no_such_kernelspec` maps to 500, not 404, because Kernel Gateway answers an unknown kernel name
on `POST /api/kernels` with 500 and its own test suite asserts it. nats-py's errors never get
here: the bus layer (`kernelbus.bus`, `bus_kv`, `registry`) raises them as `KernelbusError`s
(`bus_unavailable` 503, `bus_timeout` 504, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kernelbus.errors import KernelbusError
from kernelbus_api.authorization import NotAuthorized

log = logging.getLogger(__name__)

STATUS_BY_CODE: dict[str, int] = {
    "bad_request": 400,
    "no_such_kernel": 404,
    "no_such_kernelspec": 500,
    "no_such_resource": 404,
    "capacity": 403,
    "launch_failed": 500,
    "launch_timeout": 500,
    "restart_failed": 500,
    "no_worker": 503,
    "bus_timeout": 504,
    "bus_unavailable": 503,
    "payload_too_large": 413,
    "internal": 500,
}


def error_body(status: int, message: str = "", reason: str | None = None) -> dict[str, str]:
    return {"message": message, "reason": reason or HTTPStatus(status).phrase}


RETRY_AFTER = "1"
"""Seconds a 503 tells the client to wait (`Retry-After`): outages and NATS leader elections
last seconds, and the client's retry finds the bus back as soon as it is."""


def error_response(
    status: int,
    message: str = "",
    reason: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Every 503 carries `Retry-After`: whatever was unavailable is expected back shortly."""
    if status == 503 and not any(k.lower() == "retry-after" for k in headers or {}):
        headers = {**(headers or {}), "Retry-After": RETRY_AFTER}
    return JSONResponse(error_body(status, message, reason), status_code=status, headers=headers)


def status_for(exc: KernelbusError) -> int:
    return STATUS_BY_CODE.get(exc.code, 500)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KernelbusError)
    return error_response(status_for(exc), exc.message)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    message = "" if exc.detail in (None, phrase) else str(exc.detail)
    return error_response(exc.status_code, message, headers=exc.headers)


async def _not_authorized(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotAuthorized)
    # EG answers its authorization refusals with the text as the reason.
    return error_response(403, exc.message, reason=exc.message)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(_where(e).startswith("path") for e in errors):
        # A malformed kernel id is not a route at all, as in jupyter_server: catch-all 404.
        return error_response(404)
    return error_response(400, describe_validation(errors))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error; see the api log")


def describe_validation(errors: Any) -> str:
    """A short message naming where the input is wrong, never echoing the input itself."""
    first: Any = next(iter(errors), {})
    if first.get("type") == "json_invalid":
        return "Invalid JSON in body of request"
    return f"{_where(first) or 'body'}: {first.get('msg', 'invalid value')}"


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error.get("loc", ()))


def install(app: FastAPI) -> None:
    """Register the handlers; the only place HTTP statuses of errors are decided."""
    app.add_exception_handler(KernelbusError, _domain)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(NotAuthorized, _not_authorized)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _unexpected)
