"""`schemas/bus/` is generated from the bus message models and must stay in sync with them."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from kernelbus import bus_schemas
from kernelbus.messages import (
    AttachConnection,
    AttachReply,
    DetachConnection,
    KernelReply,
    OkReply,
    ResourceReply,
    StartKernel,
    connection_command_adapter,
    new_kernel_id,
)
from kernelbus.schemas import main, schemas_root


def test_bus_schemas_are_in_sync_with_the_models() -> None:
    stale = bus_schemas.stale_files(schemas_root() / "bus")
    assert stale == [], "run `make schemas` to regenerate schemas/bus/"


def test_bus_schemas_validate_what_the_models_produce() -> None:
    schema = bus_schemas.bus_schemas()["StartKernel.json"]
    jsonschema.Draft202012Validator.check_schema(schema)
    command = StartKernel(kernel_id=new_kernel_id(), kernel_name="python3")
    jsonschema.validate(command.model_dump(mode="json"), schema)


def test_check_fails_on_a_stale_directory(tmp_path: Path) -> None:
    bus_schemas.write(tmp_path)
    (tmp_path / "StartKernel.json").write_text("{}\n")
    assert bus_schemas.stale_files(tmp_path) == ["StartKernel.json"]


def test_the_command_line_checks_the_real_tree() -> None:
    assert main(["--check"]) == 0


def test_attach_and_detach_are_two_commands_on_one_subject() -> None:
    kid = new_kernel_id()
    attach = AttachConnection(kernel_id=kid, conn_id="c1", session_id="s", api_instance="api-1")
    detach = DetachConnection(kernel_id=kid, conn_id="c1")
    for command in (attach, detach):
        parsed = connection_command_adapter.validate_json(command.model_dump_json())
        assert parsed == command and type(parsed) is type(command)
    with pytest.raises(ValidationError):  # a detach carries no session to attach
        connection_command_adapter.validate_python({**attach.model_dump(), "command": "detach"})
    with pytest.raises(ValidationError):
        connection_command_adapter.validate_python({**detach.model_dump(), "command": "nope"})


@pytest.mark.parametrize(
    ("reply", "schema"),
    [
        (AttachReply(replayed=3), "AttachReply.json"),
        (ResourceReply(content_b64="AAE=", mime="image/png"), "ResourceReply.json"),
        (KernelReply(), "KernelReply.json"),
    ],
)
def test_typed_replies_match_their_schemas(reply: OkReply, schema: str) -> None:
    jsonschema.validate(reply.model_dump(mode="json"), bus_schemas.bus_schemas()[schema])


def test_replies_refuse_fields_of_another_reply() -> None:
    with pytest.raises(ValidationError):
        KernelReply.model_validate({"status": "ok", "replayed": 1})
    with pytest.raises(ValidationError):
        AttachReply.model_validate({"status": "ok", "replayed": -1})
    with pytest.raises(ValidationError):
        ResourceReply.model_validate({"status": "ok", "mime": "image/png"})
