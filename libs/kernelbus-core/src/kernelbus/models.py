"""Records kept in the registry (JetStream KV) and the Jupyter models built from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kernelbus.timefmt import jupyter_timestamp, utcnow

ExecutionState = Literal["starting", "idle", "busy", "restarting", "dead"]


def jupyter_kernel_model(
    kernel_id: str,
    name: str,
    last_activity: datetime,
    execution_state: str,
    connections: int = 0,
    reason: str = "",
) -> dict[str, Any]:
    """The kernel model exactly as jupyter_server's `kernel_model` shapes it (REST answers)."""
    model: dict[str, Any] = {
        "id": kernel_id,
        "name": name,
        "last_activity": jupyter_timestamp(last_activity),
        "execution_state": execution_state,
        "connections": int(connections),
    }
    if reason:
        model["reason"] = reason
    return model


class KernelspecInfo(BaseModel):
    """One kernelspec a worker can run: kernel.json contents plus its resource file names."""

    model_config = ConfigDict(extra="forbid")

    name: str
    spec: dict[str, Any]
    resource_files: list[str] = Field(default_factory=list)


class WorkerHeartbeat(BaseModel):
    """What a live worker announces every few seconds (KV key: its worker_id)."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str
    max_kernels: int
    running_kernels: int
    kernelspecs: list[KernelspecInfo]
    default_kernel_name: str | None = None
    pooled_kernels: dict[str, int] = Field(
        default_factory=dict, description="Ready pre-started kernels per kernelspec (warm pool)."
    )
    started_at: datetime
    hostname: str = ""

    @property
    def free_slots(self) -> int:
        return self.max_kernels - self.running_kernels

    def has_spec(self, name: str) -> bool:
        return any(spec.name == name for spec in self.kernelspecs)


class KernelRecord(BaseModel):
    """The registry entry of one kernel (KV key: its kernel_id), written by its worker."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    worker_id: str
    execution_state: ExecutionState = "starting"
    last_activity: datetime = Field(default_factory=utcnow)
    started_at: datetime = Field(default_factory=utcnow)
    reason: str = ""
    username: str | None = None
    restarts: int = 0
    pid: int | None = None
    connection_info: dict[str, Any] = Field(default_factory=dict)
    provisioner_info: dict[str, Any] = Field(default_factory=dict)
    launch_env: dict[str, str] = Field(default_factory=dict)
    """The client's part of the kernel's environment (the start's `env`), and below its
    working directory: a successor that re-adopts the kernel restarts it with them."""
    working_dir: str | None = None

    def jupyter_model(self, connections: int = 0) -> dict[str, Any]:
        return jupyter_kernel_model(
            self.id, self.name, self.last_activity, self.execution_state, connections, self.reason
        )
