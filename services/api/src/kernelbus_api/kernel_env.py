"""Filtering and checking the `env` of a start request (PROTOCOLS §1.5, as Enterprise Gateway).

Only `KERNEL_*` names and those allow-listed in `KERNELBUS_CLIENT_ENVS` are kept. Values are
checked like EG does; a message names the key but never echoes the value. The worker builds
the final process environment; the api only filters and validates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kernelbus.kernelenv import (
    MAX_VALUE_LENGTH,
    NEVER_FROM_CLIENTS,
    check_request_env,
    check_value,
)

__all__ = [
    "MAX_VALUE_LENGTH",
    "KernelEnv",
    "check_value",
    "filter_env",
    "kernel_env",
    "launch_timeout",
]


@dataclass(frozen=True)
class KernelEnv:
    env: dict[str, str] = field(default_factory=dict)
    launch_timeout: float = 40.0
    working_dir: str | None = None
    username: str | None = None


def filter_env(env: dict[str, Any] | None, allowed: frozenset[str]) -> dict[str, str]:
    """The request variables a kernel may receive, each value checked."""
    kept: dict[str, Any] = {}
    for key, value in (env or {}).items():
        if not (key.startswith("KERNEL_") or "*" in allowed or key in allowed):
            continue
        if key in NEVER_FROM_CLIENTS:  # the gateway's own secrets and loader hooks: dropped
            continue
        kept[key] = value
    return check_request_env(kept)


def launch_timeout(env: dict[str, str], default: float) -> float:
    """`KERNEL_LAUNCH_TIMEOUT` as whole seconds in (0, 3600]; otherwise the default."""
    try:
        value = int(env.get("KERNEL_LAUNCH_TIMEOUT", "").strip())
    except ValueError:
        return default
    return float(value) if 0 < value <= 3600 else default


def kernel_env(
    env: dict[str, Any] | None, allowed: frozenset[str], default_timeout: float
) -> KernelEnv:
    """Everything a start request's `env` decides, validated."""
    kept = filter_env(env, allowed)
    return KernelEnv(
        env=kept,
        launch_timeout=launch_timeout(kept, default_timeout),
        working_dir=kept.get("KERNEL_WORKING_DIR") or None,
        username=kept.get("KERNEL_USERNAME") or None,
    )
