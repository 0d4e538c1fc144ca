"""The rules a kernel's request environment obeys, checked by the api when a client sends it
and again by the worker when a `StartKernel` arrives over the bus (never trusted blindly: any
holder of the api's bus credentials could publish one). Messages name the key, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kernelbus.errors import BadRequest

MAX_VALUE_LENGTH = 4096
MAX_VARIABLES = 256
_PROHIBITED = re.compile(r"[$`\r\n\x00]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

NEVER_FROM_CLIENTS = frozenset(
    {
        "KERNELBUS_AUTH_TOKEN",
        "KG_AUTH_TOKEN",
        "EG_AUTH_TOKEN",
        "NATS_URL",
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TLS_CA",
        "NATS_TLS_CERT",
        "NATS_TLS_KEY",
        # The dynamic loader runs these before any kernelspec code: no client sets them.
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
    }
)


def check_value(key: str, value: Any) -> str:
    if not isinstance(key, str) or not _NAME.match(key):
        raise BadRequest(f"Environment variable name {str(key)[:64]!r} is not a valid name")
    if not isinstance(value, str):
        raise BadRequest(f"Environment variable '{key}' value must be a string")
    if len(value) > MAX_VALUE_LENGTH:
        raise BadRequest(f"Environment variable '{key}' value exceeds maximum length")
    if _PROHIBITED.search(value):
        raise BadRequest(f"Environment variable '{key}' value contains prohibited characters")
    return value


def check_request_env(env: Mapping[str, Any]) -> dict[str, str]:
    """Every variable checked, at most MAX_VARIABLES, none the gateway keeps to itself."""
    if len(env) > MAX_VARIABLES:
        raise BadRequest(f"At most {MAX_VARIABLES} environment variables may be passed")
    checked: dict[str, str] = {}
    for key, value in env.items():
        checked[key] = check_value(key, value)
        if key in NEVER_FROM_CLIENTS:
            raise BadRequest(f"Environment variable '{key}' may not be set by a client")
    return checked
