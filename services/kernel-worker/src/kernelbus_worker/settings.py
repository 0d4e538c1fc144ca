"""Kernel-worker settings: every one an environment variable (prefix `KERNELBUS_WORKER_`)."""

from __future__ import annotations

import socket
import uuid

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from kernelbus.settings import BusSettings, comma_list
from kernelbus_worker.activity import DEFAULT_UNTRACKED
from kernelbus_worker.poolsizes import parse_pool_sizes

DEFAULT_INHERITED_ENV = (
    "PATH,LANG,LANGUAGE,LC_ALL,LC_CTYPE,TZ,HOME,USER,LOGNAME,SHELL,TMPDIR,"
    "IPYTHONDIR,JUPYTER_PATH,JUPYTER_CONFIG_DIR,JUPYTER_DATA_DIR,JUPYTER_RUNTIME_DIR,"
    "VIRTUAL_ENV,OPENBLAS_CORETYPE,OPENBLAS_L2_SIZE"
)


class WorkerSettings(BusSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="KERNELBUS_WORKER_")

    id: str = Field(
        default_factory=lambda: f"{socket.gethostname()[:20]}-{uuid.uuid4().hex[:8]}",
        pattern=r"^[A-Za-z0-9_-]+$",
        max_length=64,
        description="Worker id; a restarted worker with the same id re-adopts its kernels.",
    )
    max_kernels: int = Field(
        default=32, ge=1, le=10_000, description="Kernels this worker runs at most."
    )
    kernelspecs: str = Field(
        default="",
        description="Comma list of kernelspec names this worker offers (empty: all found).",
    )
    inherited_env: str = Field(
        default=DEFAULT_INHERITED_ENV,
        description="Comma list of the worker's own environment variables kernels inherit.",
    )
    heartbeat_interval: float = Field(
        default=2.0, gt=0, le=60, description="Seconds between heartbeats."
    )
    poll_interval: float = Field(
        default=1.0, gt=0, le=60, description="Seconds between checks that each kernel is alive."
    )
    autorestart: bool = Field(default=True, description="Restart a kernel that died on its own.")
    restart_limit: int = Field(
        default=5,
        ge=0,
        le=100,
        description="Consecutive automatic restarts before `dead` (the count starts again "
        "once a kernel stayed up `stable_start_time`).",
    )
    stable_start_time: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds a kernel must stay up after an automatic restart before its "
        "restart count resets (as jupyter_client's `KernelRestarter.stable_start_time`).",
    )
    activity_write_interval: float = Field(
        default=0.5, gt=0, le=60, description="Least seconds between registry writes of activity."
    )
    kernel_info_timeout: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="Seconds a (re)started kernel has to answer kernel_info.",
    )
    shutdown_wait: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="Seconds a kernel has to exit after shutdown_request.",
    )
    replay_window: float = Field(
        default=60.0,
        ge=0,
        le=86_400,
        description="Seconds output is kept for a reconnecting client.",
    )
    api_check_interval: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Seconds between pings of the api replicas that hold this worker's websockets.",
    )
    recent_window: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds of sent output kept to replay if an api replica dies mid-stream.",
    )
    replay_max_messages: int = Field(default=10_000, ge=0, description="Buffered messages at most.")
    replay_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=0, description="Buffered bytes at most."
    )
    shutdown_kernels_on_exit: bool = Field(
        default=True,
        description="Shut every kernel down on SIGTERM (off: leave them for a successor to adopt).",
    )
    independent_kernels: bool = Field(
        default=True,
        description="Kernels outlive a crashed worker; a successor with its id adopts them.",
    )
    pool: str = Field(
        default="",
        description="Warm pool: pre-started kernels per kernelspec, `python3=2,r=1` (Python only).",
    )
    pool_max: int = Field(
        default=4,
        ge=0,
        le=1000,
        description="Most warm kernels per pooled kernelspec: the pool grows from its `pool` "
        "size to as many as were started in the last `pool_demand_window` seconds, up to this "
        "(never below the `pool` size). Refills wait until no start is in flight.",
    )
    pool_demand_window: float = Field(
        default=120.0,
        gt=0,
        le=86400,
        description="Seconds of recent starts that size the warm pool (`pool_max`).",
    )
    use_kernel_working_dir: bool = Field(
        default=False,
        description="Start kernels in the client's KERNEL_WORKING_DIR when it exists on this "
        "host (off by default: jupyter_server always sends its own notebook directory, which "
        "on a worker host may exist and mean something else).",
    )
    untracked_message_types: str = Field(
        default=",".join(DEFAULT_UNTRACKED),
        pattern=r"^[A-Za-z0-9_, ]*$",
        description="Comma list of message types that never count as kernel activity nor set "
        "its execution state (jupyter_server's `untracked_message_types`).",
    )
    kernel_transport: str = Field(
        default="tcp",
        pattern="^(tcp|ipc)$",
        description="ZMQ transport of new kernels: `tcp` (loopback ports any local user can "
        "reach) or `ipc` (Unix sockets in the runtime dir, private to the worker's user).",
    )
    runtime_dir: str = Field(
        default="",
        description="Where connection files go (default: Jupyter's). When set, the directory "
        "is this host's workers' own: a starting worker reaps the kernels left there that "
        "nobody will adopt.",
    )
    iopub_keeper: bool = Field(
        default=True,
        description="With a `runtime_dir`: run an iopub keeper there, a process that outlives "
        "a crashed worker as kernels do and keeps their recent output, so a successor "
        "delivers what the kernels printed while no worker was connected (ADR 0014).",
    )
    iopub_keeper_window: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds of each kernel's iopub the keeper keeps (64 MiB at most).",
    )
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Port of /metrics and /health/live; 0 = off."
    )
    metrics_ip: str = Field(default="127.0.0.1", description="Address of the metrics endpoint.")

    @field_validator("kernelspecs", "inherited_env")
    @classmethod
    def _names(cls, value: str) -> str:
        for name in comma_list(value):
            if not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
                raise ValueError(f"not a valid name: {name!r}")
        return value

    @property
    def untracked_types(self) -> frozenset[str]:
        return frozenset(comma_list(self.untracked_message_types))

    @field_validator("pool")
    @classmethod
    def _pool(cls, value: str) -> str:
        parse_pool_sizes(value)
        return value

    @property
    def pool_sizes(self) -> dict[str, int]:
        """`pool` parsed: warm kernels per kernelspec name."""
        return parse_pool_sizes(self.pool)

    @property
    def kernelspec_names(self) -> list[str]:
        return list(comma_list(self.kernelspecs))

    @property
    def inherited_names(self) -> list[str]:
        return list(comma_list(self.inherited_env))
