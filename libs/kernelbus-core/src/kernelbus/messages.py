"""Commands and replies that cross the bus (request/reply), validated on both sides.

Commands are imperative (`StartKernel`); what happened afterwards is an event, not a reply.
JSON Schemas of these models are generated into `schemas/bus/` (`python -m kernelbus.schemas
--write`) and a test keeps them in sync, so non-Python peers have the contract too.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from kernelbus.errors import ErrorCode
from kernelbus.models import KernelRecord

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
"""Kernel (and session) ids: lower-case UUIDs, as jupyter_server makes them."""
KernelId = Annotated[str, Field(pattern=UUID_PATTERN)]
KernelName = Annotated[str, Field(pattern=r"^[\w.\-%]+$", max_length=255)]


def new_kernel_id() -> str:
    return str(uuid.uuid4())


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartKernel(_Command):
    """Start a kernel of `kernel_name` with id `kernel_id` on the addressed worker.

    Idempotent: a worker that already runs `kernel_id` answers with the existing record.
    """

    command: Literal["start"] = "start"
    kernel_id: KernelId
    kernel_name: KernelName
    env: dict[str, str] = Field(default_factory=dict)
    username: str | None = None
    launch_timeout: float = Field(default=40.0, gt=0, le=3600)
    working_dir: str | None = None


class InterruptKernel(_Command):
    command: Literal["interrupt"] = "interrupt"
    kernel_id: KernelId


class RestartKernel(_Command):
    command: Literal["restart"] = "restart"
    kernel_id: KernelId
    kernel_info_timeout: float | None = Field(
        default=None, gt=0, le=3600, description="Seconds the new kernel has to answer."
    )


class ShutdownKernel(_Command):
    command: Literal["shutdown"] = "shutdown"
    kernel_id: KernelId
    reason: str = ""


KernelCommand = Annotated[
    InterruptKernel | RestartKernel | ShutdownKernel, Field(discriminator="command")
]
kernel_command_adapter: TypeAdapter[InterruptKernel | RestartKernel | ShutdownKernel] = TypeAdapter(
    KernelCommand
)


class GetResource(_Command):
    """Fetch one resource file (logo, kernel.js, kernel.css) of a kernelspec."""

    command: Literal["resource"] = "resource"
    kernel_name: KernelName
    file: str

    @field_validator("file")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value.startswith("."):
            raise ValueError("resource must be a plain file name")
        return value


class AttachConnection(_Command):
    """A websocket connection opened (or closed) on a kernel, for routing and buffering."""

    command: Literal["attach", "detach"] = "attach"
    kernel_id: KernelId
    conn_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=128)]
    session_id: Annotated[str, Field(max_length=256)]
    api_instance: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=128)]


class KernelReply(BaseModel):
    """Success: the kernel's registry record after the command."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok"] = "ok"
    kernel: KernelRecord | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class CommandError(BaseModel):
    """Failure with a stable code (see `kernelbus.errors`) and a human message."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["error"] = "error"
    code: ErrorCode
    message: str


Reply = Annotated[KernelReply | CommandError, Field(discriminator="status")]
reply_adapter: TypeAdapter[KernelReply | CommandError] = TypeAdapter(Reply)
