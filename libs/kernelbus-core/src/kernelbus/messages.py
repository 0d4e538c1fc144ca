"""Commands and replies that cross the bus (request/reply), validated on both sides.

Commands are imperative (`StartKernel`); what happened afterwards is an event, not a reply.
JSON Schemas of these models are generated into `schemas/bus/` (`python -m kernelbus.schemas
--write`) and a test keeps them in sync, so non-Python peers have the contract too.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

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


ConnId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=128)]
MAX_INPUTS_KEPT = 256
"""At most this many sequence numbers in an attach's `inputs_kept` (the api keeps fewer)."""
InputSeqs = Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=MAX_INPUTS_KEPT)]
"""Sequence numbers of client messages on one connection (`subjects.input_reply`)."""


class AttachConnection(_Command):
    """A websocket connection opened on a kernel: route its replies, replay what its session
    is owed. Answered with `AttachReply`."""

    command: Literal["attach"] = "attach"
    kernel_id: KernelId
    conn_id: ConnId
    session_id: Annotated[str, Field(max_length=256)]
    api_instance: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=128)]
    inputs_sent: int = Field(default=0, ge=0)
    """The highest sequence number this connection's client messages were given so far (0:
    none). A worker that does not know the connection knows nothing of those."""
    inputs_kept: InputSeqs = []
    """Sequence numbers of the connection's last client messages, published and kept by the
    api for a resend (ADR 0024): the reply names those this worker never received."""


class DetachConnection(_Command):
    """A websocket connection closed: if it was the kernel's last, its session starts
    buffering. Answered with `KernelReply`."""

    command: Literal["detach"] = "detach"
    kernel_id: KernelId
    conn_id: ConnId


ConnectionCommand = Annotated[AttachConnection | DetachConnection, Field(discriminator="command")]
connection_command_adapter: TypeAdapter[AttachConnection | DetachConnection] = TypeAdapter(
    ConnectionCommand
)


class OkReply(BaseModel):
    """Success; each command's reply model below says what comes with it."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok"] = "ok"


class KernelReply(OkReply):
    """Success: the kernel's registry record after the command."""

    kernel: KernelRecord | None = None


class AttachReply(KernelReply):
    """Attached: `replayed` older messages (its session's replay buffer, then what a lost api
    replica may not have delivered) follow on the connection's subject, before its live output."""

    replayed: int = Field(default=0, ge=0)
    inputs_missing: InputSeqs = []
    """Of the request's `inputs_kept`, those this worker never received since it knew the
    connection (lost on the way, e.g. into a dead cluster route): the api sends them again."""


class ResourceReply(OkReply):
    """One kernelspec resource file (`GetResource`)."""

    content_b64: str
    mime: str


class CommandError(BaseModel):
    """Failure with a stable code (see `kernelbus.errors`) and a human message."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["error"] = "error"
    code: ErrorCode
    message: str
