"""Loading the event JSON Schemas (`schemas/events/**/v*.json`, the source of truth) and
validating jupyter_events capsules against them.

The schema directory is `KERNELBUS_SCHEMAS_DIR` when set, else `kernelbus/_schemas/events`
inside an installed wheel, else `schemas/events` of the source tree this package lives in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from jupyter_events.schema_registry import SchemaRegistry

from kernelbus.timefmt import parse_timestamp

_CORE_KEYS = ("__timestamp__", "__schema__", "__schema_version__", "__metadata_version__")


class InvalidEvent(ValueError):
    """An event capsule that is not JSON, not an object, or fails its envelope or schema."""


@dataclass(frozen=True)
class Capsule:
    """A validated jupyter_events capsule split into envelope and data."""

    schema_id: str
    version: str
    timestamp: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "__timestamp__": self.timestamp,
            "__schema__": self.schema_id,
            "__schema_version__": self.version,
            "__metadata_version__": 1,
            **self.data,
        }


def events_schema_dir() -> Path:
    """Directory holding the event schemas (see the module docstring for the search order)."""
    override = os.environ.get("KERNELBUS_SCHEMAS_DIR")
    if override:
        return Path(override) / "events"
    here = Path(__file__).resolve().parent
    for candidate in (here / "_schemas" / "events", here.parents[3] / "schemas" / "events"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("event schemas not found; set KERNELBUS_SCHEMAS_DIR")


def load_event_schemas(directory: Path | None = None) -> list[dict[str, Any]]:
    """Every event schema as a dict, in a stable order."""
    root = directory or events_schema_dir()
    return [json.loads(path.read_text()) for path in sorted(root.rglob("v*.json"))]


def event_registry(directory: Path | None = None) -> SchemaRegistry:
    """A jupyter_events `SchemaRegistry` holding every event schema (metaschema-checked)."""
    registry = SchemaRegistry()
    for schema in load_event_schemas(directory):
        registry.register(schema)
    return registry


def parse_capsule(registry: SchemaRegistry, raw: bytes | str | Any) -> Capsule:
    """Decode (when bytes/str) and validate a capsule: envelope, known (id, version), data.

    Raises `InvalidEvent` with a one-line reason; never anything else for bad input.
    """
    value = _decode(raw) if isinstance(raw, bytes | str) else raw
    if not isinstance(value, dict):
        raise InvalidEvent(f"event is not a JSON object but {type(value).__name__}")
    capsule = _envelope(value)
    schema = _schema_for(registry, capsule.schema_id, capsule.version)
    try:
        schema.validate(capsule.data)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "event"
        raise InvalidEvent(f"{capsule.schema_id}: {where}: {exc.message}") from exc
    return capsule


def _decode(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"event is not valid JSON: {exc}") from exc


def _envelope(value: dict[str, Any]) -> Capsule:
    missing = [key for key in _CORE_KEYS if key not in value]
    if missing:
        raise InvalidEvent(f"envelope is missing {', '.join(missing)}")
    schema_id, version = value["__schema__"], value["__schema_version__"]
    timestamp = value["__timestamp__"]
    if not all(isinstance(v, str) for v in (schema_id, version, timestamp)):
        raise InvalidEvent(
            "envelope fields __schema__, __schema_version__, __timestamp__ must be strings"
        )
    if value["__metadata_version__"] != 1 or isinstance(value["__metadata_version__"], bool):
        raise InvalidEvent("__metadata_version__ must be 1")
    try:
        parse_timestamp(timestamp)
    except ValueError as exc:
        raise InvalidEvent(f"__timestamp__ is not an ISO-8601 time: {timestamp!r}") from exc
    data = {k: v for k, v in value.items() if k not in _CORE_KEYS}
    return Capsule(schema_id, version, timestamp, data)


def _schema_for(registry: SchemaRegistry, schema_id: str, version: str) -> Any:
    if schema_id not in registry:
        raise InvalidEvent(f"unknown schema {schema_id!r}")
    schema = registry.get(schema_id)
    if str(schema.version) != version:
        raise InvalidEvent(f"unknown version {version!r} of schema {schema_id!r}")
    return schema


def schemas_root() -> Path:
    """The `schemas/` directory (parent of `events/` and `bus/`)."""
    return events_schema_dir().parent


def main(argv: list[str] | None = None) -> int:
    """`python -m kernelbus.schemas [--write|--check]`: register every event schema with
    jupyter_events, then regenerate (`--write`) or verify (`--check`) `schemas/bus/`."""
    import argparse

    from kernelbus import bus_schemas

    parser = argparse.ArgumentParser(prog="python -m kernelbus.schemas")
    parser.add_argument("--write", action="store_true", help="regenerate schemas/bus/")
    parser.add_argument("--check", action="store_true", help="fail if schemas/bus/ is stale")
    args = parser.parse_args(argv)
    registry = event_registry()
    print(f"{len(registry.schema_ids)} event schemas register with jupyter_events")
    bus_dir = schemas_root() / "bus"
    if args.write:
        print("wrote", ", ".join(bus_schemas.write(bus_dir)))
    if args.check and (stale := bus_schemas.stale_files(bus_dir)):
        print("stale bus schemas (run `make schemas`):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
