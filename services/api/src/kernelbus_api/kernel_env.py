"""Filtering and checking the `env` of a start request (PROTOCOLS §1.5, as Enterprise Gateway).

Only `KERNEL_*` names and those allow-listed in `KERNELBUS_CLIENT_ENVS` are kept. Values are
checked like EG does; a message names the key but never echoes the value. The worker builds
the final process environment; the api only filters and validates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kernelbus.errors import BadRequest

MAX_VALUE_LENGTH = 4096
_PROHIBITED = re.compile(r"[$`\r\n\x00]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class KernelEnv:
    env: dict[str, str] = field(default_factory=dict)
    launch_timeout: float = 40.0
    working_dir: str | None = None
    username: str | None = None


def filter_env(env: dict[str, Any] | None, allowed: frozenset[str]) -> dict[str, str]:
    """The request variables a kernel may receive, each value checked."""
    kept: dict[str, str] = {}
    for key, value in (env or {}).items():
        if not (key.startswith("KERNEL_") or "*" in allowed or key in allowed):
            continue
        kept[key] = check_value(key, value)
    return kept


def check_value(key: str, value: Any) -> str:
    if not _NAME.match(key):
        raise BadRequest(f"Environment variable name {key[:64]!r} is not a valid name")
    if not isinstance(value, str):
        raise BadRequest(f"Environment variable '{key}' value must be a string")
    if len(value) > MAX_VALUE_LENGTH:
        raise BadRequest(f"Environment variable '{key}' value exceeds maximum length")
    if _PROHIBITED.search(value):
        raise BadRequest(f"Environment variable '{key}' value contains prohibited characters")
    return value


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
