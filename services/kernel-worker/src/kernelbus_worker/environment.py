"""The environment a kernel process gets: built from scratch, never the worker's own.

Order (PROTOCOLS §1.5): kernelspec `env` (with `{VAR}` substitution), then the worker's
allow-listed variables, then the request's variables (already filtered by the api to
`KERNEL_*` and its allow-list), then the gateway's own markers. Tokens and NATS credentials
are never inherited: only names on the allow-list cross.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SUBST = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
NEVER_INHERITED = frozenset(
    {
        "KERNELBUS_AUTH_TOKEN",
        "KG_AUTH_TOKEN",
        "EG_AUTH_TOKEN",
        "NATS_URL",
        "NATS_USER",
        "NATS_PASSWORD",
    }
)


def build_kernel_env(
    spec_env: Mapping[str, str],
    worker_env: Mapping[str, str],
    inherited: list[str],
    request_env: Mapping[str, str],
    kernel_id: str,
    language: str,
) -> dict[str, str]:
    allowed = {k: worker_env[k] for k in inherited if k in worker_env and k not in NEVER_INHERITED}
    env = {k: _substitute(v, {**allowed, **request_env}) for k, v in spec_env.items()}
    env.update(allowed)
    env.update({k: v for k, v in request_env.items() if k not in NEVER_INHERITED})
    env.update({"KERNEL_ID": kernel_id, "KERNEL_LANGUAGE": language, "KERNEL_GATEWAY": "1"})
    return env


def _substitute(value: str, env: Mapping[str, str]) -> str:
    return _SUBST.sub(lambda m: env.get(m.group(1), m.group(0)), value)
