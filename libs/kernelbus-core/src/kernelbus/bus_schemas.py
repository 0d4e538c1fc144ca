"""JSON Schemas of the bus messages (`schemas/bus/*.json`), generated from the pydantic models
in `kernelbus.messages` and `kernelbus.models` so non-Python peers have the contract too.

`python -m kernelbus.schemas --write` regenerates them; `--check` fails when they are stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kernelbus import messages, models

_MODELS: tuple[type[BaseModel], ...] = (
    messages.StartKernel,
    messages.InterruptKernel,
    messages.RestartKernel,
    messages.ShutdownKernel,
    messages.GetResource,
    messages.AttachConnection,
    messages.DetachConnection,
    messages.KernelReply,
    messages.AttachReply,
    messages.ResourceReply,
    messages.CommandError,
    models.KernelRecord,
    models.WorkerHeartbeat,
    models.KernelspecInfo,
)

BUS_SCHEMA_ID = "https://kernelbus.io/schemas/bus/{name}.json"


def bus_schemas() -> dict[str, dict[str, Any]]:
    """`{file name: schema}` for every bus message model."""
    result = {}
    for model in _MODELS:
        schema = model.model_json_schema()
        schema = {"$id": BUS_SCHEMA_ID.format(name=model.__name__), **schema}
        result[f"{model.__name__}.json"] = schema
    return result


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def stale_files(directory: Path) -> list[str]:
    """Names of the bus schema files that are missing or differ from the models."""
    stale = []
    for name, schema in bus_schemas().items():
        path = directory / name
        if not path.exists() or path.read_text() != render(schema):
            stale.append(name)
    return stale


def write(directory: Path) -> list[str]:
    """Write every bus schema file; returns the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, schema in bus_schemas().items():
        (directory / name).write_text(render(schema))
    return sorted(bus_schemas())
