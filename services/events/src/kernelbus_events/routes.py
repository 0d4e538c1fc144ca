"""The query API: stored events with filters and a cursor, a live tail, stats, health, and
`POST /api/events` for producers that reach Kernelbus only over HTTP (jupyter_server)."""

from __future__ import annotations

import json
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from kernelbus import subjects
from kernelbus.events import EVENT_ID_HEADER, MSG_ID_HEADER, SOURCE_HEADER
from kernelbus.metrics import CONTENT_TYPE
from kernelbus.schemas import InvalidEvent, parse_capsule
from kernelbus_events.deps import Authorized, Filters, State, Store
from kernelbus_events.streaming import sse_events

health = APIRouter(prefix="/api/health", tags=["health"])
router = APIRouter(prefix="/api/events", tags=["events"], dependencies=[Authorized])
metrics = APIRouter(dependencies=[Authorized])

_EVENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@health.get("/live")
async def live() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@health.get("/ready")
async def ready(state: State) -> JSONResponse:
    """NATS connected and the consumer pulling: events are being stored."""
    ok = state.nc.is_connected and state.consumer.ready.is_set()
    return JSONResponse({"status": "ok" if ok else "unavailable"}, status_code=200 if ok else 503)


@metrics.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
async def prometheus(state: State) -> PlainTextResponse:
    """Prometheus metrics of this events process (text format 0.0.4), behind the token like
    every route but health: Prometheus sends `authorization: {type: token, credentials: ...}`."""
    return PlainTextResponse(state.metrics.render(), media_type=CONTENT_TYPE)


@router.get("")
async def list_events(
    store: Store,
    state: State,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, description="Page size (capped by the server).")] = 100,
) -> dict[str, Any]:
    """Stored events in arrival order. Pass the returned `cursor` as `after` for the next page;
    `more` says whether the page was full."""
    size = min(limit, state.settings.page_limit)
    events = await store.query(filters, size)
    cursor = events[-1].seq if events else filters.after
    return {"events": [e.to_json() for e in events], "cursor": cursor, "more": len(events) == size}


@router.get("/stream")
async def stream(request: Request, state: State, filters: Filters) -> StreamingResponse:
    """Server-sent events: stored events after `after` (or `Last-Event-ID`), then live ones.
    Each SSE `id` is the event's `seq`, so a reconnecting client resumes where it stopped."""
    body = sse_events(request, state.store, state.tail, filters)
    return StreamingResponse(body, media_type="text/event-stream")


@router.get("/stats")
async def stats(store: Store) -> dict[str, int]:
    """Counts of stored and dead-lettered events."""
    return await store.counts()


@router.get("/deadletters/count")
async def deadletter_count(store: Store) -> dict[str, int]:
    """Events rejected by validation (published to the dead-letter stream)."""
    return {"count": (await store.counts())["deadletters"]}


@router.post("", status_code=202)
async def post_event(
    request: Request, state: State, capsule: Annotated[Any, Body()] = None
) -> dict[str, str]:
    """Accept one jupyter_events capsule, validate it, and publish it into the event stream.

    A `Kb-Event-Id` request header makes retries idempotent (it becomes the `Nats-Msg-Id`).
    """
    try:
        parse_capsule(state.registry, capsule)
    except InvalidEvent as exc:
        raise HTTPException(400, str(exc)) from None
    event_id = _event_id(request.headers.get(EVENT_ID_HEADER))
    headers = {MSG_ID_HEADER: event_id, EVENT_ID_HEADER: event_id, SOURCE_HEADER: "http"}
    subject = subjects.event_subject(capsule["__schema__"])
    try:
        await state.js.publish(subject, json.dumps(capsule).encode(), headers=headers)
    except Exception as exc:  # NATS away or JetStream unavailable: the client may retry
        raise HTTPException(503, f"event stream unavailable: {exc}") from exc
    return {"id": event_id}


def _event_id(offered: str | None) -> str:
    if offered is None:
        return uuid.uuid4().hex
    if not _EVENT_ID.match(offered):
        raise HTTPException(400, f"{EVENT_ID_HEADER} must match {_EVENT_ID.pattern}")
    return offered
