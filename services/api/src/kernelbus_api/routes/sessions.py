"""Sessions (PROTOCOLS §1.8), jupyter_server's model, kept in KV (see `kernelbus_api.sessions`).

Models are returned as built (not re-serialised through `SessionModel`, which only documents
them): the kernel's `reason` is present only when non-empty while a session's `name` may be null.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse, Response

from kernelbus.errors import NoSuchKernelspec
from kernelbus.messages import UUID_PATTERN
from kernelbus_api.auth import bound_user, require_token
from kernelbus_api.body import json_body, openapi_body
from kernelbus_api.deps import SessionManager, Settings
from kernelbus_api.errors import error_response
from kernelbus_api.models import ErrorModel, SessionBody, SessionModel

router = APIRouter(dependencies=[Depends(require_token)], tags=["sessions"])

SessionId = Annotated[str, Path(pattern=UUID_PATTERN, description="A session id; else 404.")]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorModel} for code in (401, *codes)}


@router.get("/api/sessions", response_model=list[SessionModel], responses=_errors(403))
async def list_sessions(sessions: SessionManager, settings: Settings) -> Any:
    """Every session whose kernel still exists; 403 when listing is turned off."""
    if not settings.list_kernels:
        return error_response(403, "Forbidden")
    return JSONResponse(await sessions.list_models())


@router.post(
    "/api/sessions",
    status_code=201,
    response_model=SessionModel,
    responses=_errors(400, 403, 500, 501, 503),
    openapi_extra=openapi_body(SessionBody, required=True),
)
async def create_session(
    body: Annotated[SessionBody | None, Depends(json_body(SessionBody))],
    sessions: SessionManager,
    settings: Settings,
    user: Annotated[str | None, Depends(bound_user)],
) -> JSONResponse:
    """Create a session (and start its kernel), or return the existing session of the path."""
    try:
        model = await sessions.create(body or SessionBody(), user)
    except NoSuchKernelspec as exc:
        return error_response(501, exc.message)
    location = f"{settings.base_url}api/sessions/{model['id']}"
    return JSONResponse(model, status_code=201, headers={"Location": location})


@router.get("/api/sessions/{session_id}", response_model=SessionModel, responses=_errors(404))
async def get_session(session_id: SessionId, sessions: SessionManager) -> Any:
    """One session; 404 `Session not found: {id}`."""
    return JSONResponse(await sessions.model(await sessions.get(session_id)))


@router.patch(
    "/api/sessions/{session_id}",
    response_model=SessionModel,
    responses=_errors(400, 403, 404, 500, 501, 503),
    openapi_extra=openapi_body(SessionBody, required=True),
)
async def update_session(
    session_id: SessionId,
    body: Annotated[SessionBody | None, Depends(json_body(SessionBody))],
    sessions: SessionManager,
    user: Annotated[str | None, Depends(bound_user)],
) -> Any:
    """Change a session's path, name, type or kernel (`{"id"}` existing, `{"name"}` new)."""
    try:
        return JSONResponse(await sessions.update(session_id, body or SessionBody(), user))
    except NoSuchKernelspec as exc:
        return error_response(501, exc.message)


@router.delete(
    "/api/sessions/{session_id}",
    status_code=204,
    response_class=Response,
    responses=_errors(404, 503),
)
async def delete_session(session_id: SessionId, sessions: SessionManager) -> Response:
    """Delete a session and shut down its kernel unless another session uses it."""
    await sessions.delete(session_id)
    return Response(status_code=204)
