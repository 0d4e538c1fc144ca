"""Request and response bodies of the REST surface (they also shape the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kernelbus.messages import KernelId, KernelName
from kernelbus.models import ExecutionState


class StartKernelBody(BaseModel):
    """`POST /api/kernels`: every field optional; unknown fields are ignored, as in KG."""

    model_config = ConfigDict(extra="ignore")

    name: KernelName | None = Field(default=None, description="Kernelspec to start.")
    env: dict[str, Any] | None = Field(
        default=None, description="KERNEL_* (and allow-listed) variables for the kernel."
    )
    path: str | None = Field(default=None, description="Accepted and ignored.")
    kernel_id: KernelId | None = Field(default=None, description="Client-chosen kernel id.")


class KernelModel(BaseModel):
    """A kernel exactly as jupyter_server's `kernel_model` shapes it."""

    id: str
    name: str
    last_activity: str = Field(description="UTC, `%Y-%m-%dT%H:%M:%S.%fZ`.")
    execution_state: ExecutionState
    connections: int
    reason: str | None = Field(default=None, description="Present only when non-empty.")


class KernelspecModel(BaseModel):
    name: str
    spec: dict[str, Any]
    resources: dict[str, str]


class KernelspecsModel(BaseModel):
    default: str
    kernelspecs: dict[str, KernelspecModel]


class VersionModel(BaseModel):
    version: str = Field(description="The jupyter_server version Kernelbus is compatible with.")
    kernelbus: str


class HealthModel(BaseModel):
    status: str
    reason: str = ""


class ErrorModel(BaseModel):
    message: str
    reason: str


class SessionBody(BaseModel):
    """`POST /api/sessions` and `PATCH /api/sessions/{id}` (jupyter_server's fields)."""

    model_config = ConfigDict(extra="ignore")

    path: str | None = Field(default=None, max_length=4096)
    name: str | None = Field(default=None, max_length=4096)
    type: str | None = Field(default=None, max_length=64)
    kernel: dict[str, Any] | None = Field(default=None, description='`{"id"}` or `{"name"}`.')
    notebook: dict[str, Any] | None = Field(default=None, description="Old form of path/name.")


class SessionModel(BaseModel):
    id: str
    path: str
    name: str | None
    type: str
    kernel: KernelModel
    notebook: dict[str, Any] | None = None
