"""Dependencies that read as sentences in route signatures."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, HTTPException, Query, Request

from kernelbus.timefmt import parse_timestamp
from kernelbus.tokens import token_ok
from kernelbus_events.state import AppState
from kernelbus_events.store import EventFilter, EventStore


def _state(request: Request) -> AppState:
    return cast(AppState, request.app.state.kb)


def _store(request: Request) -> EventStore:
    return _state(request).store


def require_token(request: Request) -> None:
    expected = _state(request).settings.auth_token
    if not token_ok(
        expected, request.headers.get("authorization"), request.query_params.get("token")
    ):
        raise HTTPException(status_code=401, detail="a valid token is required")


def _time(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return parse_timestamp(value).timestamp()
    except ValueError:
        raise HTTPException(400, f"{name} is not an ISO-8601 time: {value!r}") from None


def _filters(
    request: Request,
    schema: Annotated[str | None, Query(description="Schema `$id` to keep.")] = None,
    kernel_id: Annotated[str | None, Query(description="Kernel id to keep.")] = None,
    since: Annotated[str | None, Query(description="ISO-8601; events at or after.")] = None,
    until: Annotated[str | None, Query(description="ISO-8601; events at or before.")] = None,
    after: Annotated[int | None, Query(ge=0, description="Cursor from a previous page.")] = None,
) -> EventFilter:
    cursor = after if after is not None else _last_event_id(request)
    return EventFilter(schema, kernel_id, _time(since, "since"), _time(until, "until"), cursor)


def _last_event_id(request: Request) -> int:
    value = request.headers.get("last-event-id", "")
    return int(value) if value.isdigit() else 0


State = Annotated[AppState, Depends(_state)]
Store = Annotated[EventStore, Depends(_store)]
Filters = Annotated[EventFilter, Depends(_filters)]
Authorized = Depends(require_token)
