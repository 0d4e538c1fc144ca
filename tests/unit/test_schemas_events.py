"""The event schemas in schemas/events: jupyter_events rules, examples, jupyter_server parity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import jupyter_server
import pytest
from jupyter_events import yaml as jyaml
from jupyter_events.schema_registry import SchemaRegistry

from kernelbus import events
from kernelbus.schemas import InvalidEvent, event_registry, load_event_schemas, parse_capsule

JS_SCHEMAS = Path(jupyter_server.__file__).parent / "event_schemas"
KID = "8c4b7a1e-3f0e-4b8e-9d59-5d2f8c7f6a10"
WORKER = {"worker_id": "w1", "hostname": "h", "max_kernels": 4, "kernel_ids": [KID]}
RESTART = {
    "service": "kernelbus-worker",
    "exit_code": -9,
    "restarts": 1,
    "delay": 0.25,
    "pid": 4242,
    "hostname": "h",
}

VALID: list[tuple[str, dict[str, Any]]] = [
    (events.KERNEL_ACTIONS, {"action": "start", "msg": "m"}),
    (events.KERNEL_ACTIONS, {"action": "start", "status": "error", "msg": "m"}),
    (events.KERNEL_ACTIONS, {"action": "start", "status": "success", "msg": "m", "kernel_id": KID}),
    (events.KERNEL_ACTIONS, {"action": "shutdown", "msg": "m", "kernel_id": KID}),
    (events.KERNEL_ACTIONS, {"action": "restart", "status": "error", "msg": "m", "kernel_id": KID}),
    (events.GATEWAY_CLIENT, {"status": "success", "status_code": 200, "msg": "success"}),
    (events.CONTENTS_SERVICE, {"action": "rename", "path": "b.ipynb", "source_path": "a.ipynb"}),
    (
        events.KERNEL_ACTIVITY,
        {
            "kernel_id": KID,
            "kernel_name": "python3",
            "worker_id": "w1",
            "execution_state": "idle",
            "last_activity": "2026-11-21T22:21:58.929195Z",
            "connections": 1,
        },
    ),
    (
        events.KERNEL_CULLED,
        {"kernel_id": KID, "idle_seconds": 3.5, "reason": "idle", "culler_id": "c1"},
    ),
    (
        events.KERNEL_DIED,
        {
            "kernel_id": KID,
            "worker_id": "w1",
            "exit_code": None,
            "will_restart": True,
            "restarts": 0,
        },
    ),
    (events.WORKER_STARTED, WORKER),
    (events.WORKER_STOPPED, {**WORKER, "kernel_ids": []}),
    (events.WORKER_LOST, WORKER),
    (events.SERVICE_RESTARTED, RESTART),
    (events.SERVICE_RESTARTED, {**RESTART, "exit_code": None, "delay": 0}),
]

INVALID: list[tuple[str, dict[str, Any]]] = [
    (events.KERNEL_ACTIONS, {"action": "start", "status": "success", "msg": "m"}),
    (events.KERNEL_ACTIONS, {"action": "interrupt", "msg": "m"}),
    (events.KERNEL_ACTIONS, {"action": "shutdown", "status": "error", "msg": "m"}),
    (events.KERNEL_ACTIONS, {"action": "explode", "msg": "m", "kernel_id": KID}),
    (events.KERNEL_ACTIONS, {"action": "start", "kernel_id": KID}),
    (events.GATEWAY_CLIENT, {"status": "ok", "msg": "m"}),
    (events.CONTENTS_SERVICE, {"action": "get"}),
    (events.GATEWAY_CLIENT, {"status": "success", "status_code": "200", "msg": "m"}),
    (
        events.KERNEL_ACTIVITY,
        {
            "kernel_id": KID,
            "worker_id": "w1",
            "execution_state": "sleeping",
            "last_activity": "2026-11-21T22:21:58.929195Z",
        },
    ),
    (
        events.KERNEL_ACTIVITY,
        {
            "kernel_id": KID,
            "worker_id": "w1",
            "execution_state": "idle",
            "last_activity": "2026-11-21T22:21:58+00:00",
        },
    ),
    (events.KERNEL_CULLED, {"kernel_id": KID, "idle_seconds": -1, "reason": "x", "culler_id": "c"}),
    (
        events.KERNEL_DIED,
        {"kernel_id": KID, "worker_id": "w", "exit_code": "1", "will_restart": 1, "restarts": 0},
    ),
    (events.WORKER_STARTED, {**WORKER, "max_kernels": 1.5}),
    (events.WORKER_LOST, {**WORKER, "kernel_ids": [1]}),
    (events.WORKER_STOPPED, {"worker_id": "w1"}),
    (events.SERVICE_RESTARTED, {**RESTART, "restarts": 0}),
    (events.SERVICE_RESTARTED, {**RESTART, "exit_code": "-9"}),
    (events.SERVICE_RESTARTED, {k: v for k, v in RESTART.items() if k != "service"}),
]


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return event_registry()


def test_every_schema_registers_with_the_jupyter_events_rules() -> None:
    schemas = load_event_schemas()
    registry = SchemaRegistry()
    for schema in schemas:
        registry.register(schema)
        assert schema["$id"].startswith("https://")
        assert schema["version"] == "1"
        assert schema["title"] and schema["description"]
        assert not [p for p in schema["properties"] if p.startswith("__")]
        jsonschema.Draft7Validator.check_schema(schema)
    ids = {s["$id"] for s in schemas}
    expected = {
        events.KERNEL_ACTIONS,
        events.GATEWAY_CLIENT,
        events.CONTENTS_SERVICE,
        events.KERNEL_ACTIVITY,
        events.KERNEL_CULLED,
        events.KERNEL_DIED,
        events.WORKER_STARTED,
        events.WORKER_STOPPED,
        events.WORKER_LOST,
        events.SERVICE_RESTARTED,
    }
    assert ids == expected


@pytest.mark.parametrize(("schema_id", "data"), VALID)
def test_valid_examples_pass(
    registry: SchemaRegistry, schema_id: str, data: dict[str, Any]
) -> None:
    registry.validate_event(schema_id, data)


@pytest.mark.parametrize(("schema_id", "data"), INVALID)
def test_invalid_examples_fail(
    registry: SchemaRegistry, schema_id: str, data: dict[str, Any]
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        registry.validate_event(schema_id, data)


@pytest.mark.parametrize("name", ["kernel_actions", "gateway_client", "contents_service"])
def test_jupyter_server_schemas_are_reproduced(name: str) -> None:
    theirs = jyaml.load(JS_SCHEMAS / name / "v1.yaml")
    ours = json.loads(
        (Path(__file__).parents[2] / "schemas/events/jupyter_server" / name / "v1.json").read_text()
    )
    for key in ("$id", "version", "required", "properties", "if", "then", "type"):
        assert ours.get(key) == theirs.get(key), key


def _capsule(schema_id: str, data: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {
        "__timestamp__": "2026-11-21T22:18:21.993029+00:00Z",
        "__schema__": schema_id,
        "__schema_version__": "1",
        "__metadata_version__": 1,
        **data,
        **over,
    }


def test_parse_capsule_accepts_a_jupyter_events_capsule(registry: SchemaRegistry) -> None:
    raw = json.dumps(_capsule(events.KERNEL_ACTIONS, {"action": "start", "msg": "m"}))
    capsule = parse_capsule(registry, raw.encode())
    assert capsule.schema_id == events.KERNEL_ACTIONS
    assert capsule.data == {"action": "start", "msg": "m"}
    assert capsule.to_json() == json.loads(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"action": "start", "msg": "m"}).encode(), "missing"),
        (
            json.dumps(_capsule("https://example.org/nope/v1", {})).encode(),
            "unknown schema",
        ),
        (
            json.dumps(
                _capsule(events.GATEWAY_CLIENT, {"status": "success", "msg": "m"}),
            )
            .replace('"__schema_version__":"1"', '"__schema_version__":"2"')
            .replace('"__schema_version__": "1"', '"__schema_version__": "2"')
            .encode(),
            "unknown version",
        ),
        (
            json.dumps(_capsule(events.GATEWAY_CLIENT, {"status": "x", "msg": "m"})).encode(),
            "status",
        ),
        (
            json.dumps(
                _capsule(
                    events.GATEWAY_CLIENT,
                    {"status": "success", "msg": "m"},
                    __timestamp__="yesterday",
                )
            ).encode(),
            "ISO-8601",
        ),
        (
            json.dumps(
                _capsule(
                    events.GATEWAY_CLIENT, {"status": "success", "msg": "m"}, __metadata_version__=2
                )
            ).encode(),
            "__metadata_version__",
        ),
    ],
)
def test_parse_capsule_rejects_bad_input(registry: SchemaRegistry, raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse_capsule(registry, raw)
