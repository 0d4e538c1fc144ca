"""Who may start which kernel, as Enterprise Gateway decides it, checked before placement.

EG's rules: the unauthorized users are the global list (`KERNELBUS_UNAUTHORIZED_USERS`,
default `root`) plus the kernelspec's `metadata.process_proxy.config.unauthorized_users`; the
kernelspec's `authorized_users`, when set, replace the global `KERNELBUS_AUTHORIZED_USERS`; a
non-empty authorized set admits only its members. Both compare `KERNEL_USERNAME` exactly
(case-sensitive). A refusal is 403 with EG's message.

Beyond EG: with `KERNELBUS_USER_TOKENS` a token authenticates one user, so the
`KERNEL_USERNAME` of its requests is that user (filled in when absent; another name is 403)
instead of whatever a client sends. Requests with the shared `KERNELBUS_AUTH_TOKEN` (a gateway
acting for many users, e.g. jupyter_server) keep sending their users' names themselves.
"""

from __future__ import annotations

from typing import Any

from kernelbus.models import KernelspecInfo
from kernelbus.settings import comma_list
from kernelbus_api.settings import ApiSettings


class NotAuthorized(Exception):
    """403: the user may not start this kernel (the message is EG's)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _names(value: Any) -> frozenset[str]:
    """A kernelspec's EG lists: comma-separated strings (the settings' one syntax); a JSON
    list is accepted too."""
    if isinstance(value, str):
        return frozenset(comma_list(value))
    if isinstance(value, list):
        return frozenset(name for name in (str(item).strip() for item in value) if name)
    return frozenset()


def _proxy_config(spec: KernelspecInfo | None) -> dict[str, Any]:
    if spec is None:
        return {}
    node: Any = spec.spec.get("metadata")
    for key in ("process_proxy", "config"):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _refuse(username: str | None, clause: str, spec: KernelspecInfo | None) -> NotAuthorized:
    display = spec.spec.get("display_name") if spec else None
    kernel = f" '{display}'." if isinstance(display, str) else "s."
    return NotAuthorized(
        f"User '{username}' is {clause} to start kernel{kernel} "
        "Ensure KERNEL_USERNAME is set to an appropriate value and retry the request."
    )


def authorize(settings: ApiSettings, spec: KernelspecInfo | None, username: str | None) -> None:
    """Raise `NotAuthorized` when `username` may not start `spec`."""
    config = _proxy_config(spec)
    unauthorized = settings.unauthorized_user_set | _names(config.get("unauthorized_users"))
    authorized = _names(config.get("authorized_users")) or settings.authorized_user_set
    if username is not None and username in unauthorized:
        raise _refuse(username, "not authorized", spec)
    if authorized and username not in authorized:
        raise _refuse(username, "not in the set of users authorized", spec)


def bind_username(env: dict[str, Any] | None, bound: str | None) -> dict[str, Any] | None:
    """The request env with KERNEL_USERNAME bound to the token's user (absent: filled in; a
    different name: 403). Without a bound user the env is returned as sent."""
    if bound is None:
        return env
    env = dict(env or {})
    sent = env.get("KERNEL_USERNAME")
    if sent is not None and sent != bound:
        raise NotAuthorized(
            f"KERNEL_USERNAME '{str(sent)[:64]}' does not match the user of the token "
            f"('{bound}'). Omit KERNEL_USERNAME or use that user's token."
        )
    env["KERNEL_USERNAME"] = bound
    return env
