"""`schemas/bus/` is generated from the bus message models and must stay in sync with them."""

from __future__ import annotations

from pathlib import Path

import jsonschema

from kernelbus import bus_schemas
from kernelbus.messages import StartKernel, new_kernel_id
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
