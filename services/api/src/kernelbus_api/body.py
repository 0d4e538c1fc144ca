"""JSON request bodies read whatever their Content-Type says, as Kernel Gateway reads them.

`curl -d '{"name": "python3"}'` sends `application/x-www-form-urlencoded`; tornado-based
gateways parse the body as JSON anyway, and clients rely on it. Errors are raised as
`RequestValidationError`, so they get the same 400 bodies as any other bad input.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M | None]]:
    """A dependency: the body parsed as JSON into `model`, or None when the body is empty."""

    async def parse(request: Request) -> M | None:
        raw = await request.body()
        if not raw.strip():
            return None
        try:
            data: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body",), "msg": "invalid JSON"}]
            ) from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
            raise RequestValidationError(errors) from None

    return parse


def openapi_body(model: type[BaseModel], required: bool = False) -> dict[str, Any]:
    """`openapi_extra` documenting the JSON body that `json_body(model)` reads."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }
