"""Credentials of the embedded NATS server (`kernelbus run`): no anonymous bus.

One user per service with exactly the subjects of `deploy/nats/permissions.json` (the file
compose's `nats.conf` is rendered from: read here, never copied), plus one read-only *events
consumer* for programs that follow `kb.events.>`. Passwords are random, kept 0600 in
`<data dir>/nats/credentials.json` and re-used when the same data dir is started again.

Optional TLS for the embedded server: `KERNELBUS_NATS_SERVER_TLS_CERT` / `_KEY`; the services
(which inherit the launcher's environment) verify it with `NATS_TLS_CA`, and when they also
have a client certificate (`NATS_TLS_CERT` / `NATS_TLS_KEY`) the server requires one from
every client, signed by that CA.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelbus import subjects

PERMISSIONS_ENV = "KERNELBUS_NATS_PERMISSIONS"
CONSUMER_USER = "events-consumer"
CONSUMER_INBOX = "_INBOX_events-consumer"
"""The consumer's reply prefix (`nats.connect(..., inbox_prefix=CONSUMER_INBOX)`)."""

LAUNCHER = "kernelbus-launcher"
SERVICE_USERS = {
    "kernelbus-api": "api",
    "kernelbus-worker": "worker",
    "kernelbus-culler": "culler",
    "kernelbus-events": "events",
    LAUNCHER: "launcher",
}
"""Console script of each service -> its NATS user (permissions.json's, or below)."""


def launcher_permissions() -> dict[str, Any]:
    """`kernelbus run` itself announces the restarts it makes (`service_restarted` events):
    publishing events into the stream, and its own reply inbox. Only the embedded launcher
    has this user; compose has no launcher."""
    return {
        "publish": [f"{subjects.EVENTS_SUBJECT_PREFIX}.>", "$JS.API.>", "$JS.FC.>"],
        "subscribe": ["_INBOX_launcher.>"],
        "allow_responses": False,
    }


def consumer_permissions() -> dict[str, Any]:
    """Read-only access to the event stream: live core subscriptions of `kb.events.>`, and
    ephemeral (ordered) JetStream consumers of the events stream, nothing else. The exact
    `CONSUMER.CREATE.<stream>` subject admits ephemeral consumers only, so the events
    service's durable consumer can be neither taken over nor deleted."""
    stream = subjects.EVENTS_STREAM.name
    return {
        "publish": [
            "$JS.API.INFO",
            "$JS.API.STREAM.NAMES",
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.INFO.{stream}.*",
            "$JS.FC.>",
        ],
        "subscribe": [f"{subjects.EVENTS_SUBJECT_PREFIX}.>", f"{CONSUMER_INBOX}.>"],
        "allow_responses": False,
    }


def permissions_file() -> Path:
    """`KERNELBUS_NATS_PERMISSIONS` when set, else the repository's deploy/nats file."""
    override = os.environ.get(PERMISSIONS_ENV)
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    for candidate in (
        here / "_deploy" / "permissions.json",
        here.parents[3] / "deploy" / "nats" / "permissions.json",
    ):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"deploy/nats/permissions.json not found; set {PERMISSIONS_ENV}")


def load_permissions(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every user: the services' from permissions.json, plus the events consumer."""
    users: dict[str, dict[str, Any]] = json.loads((path or permissions_file()).read_text())["users"]
    return {**users, CONSUMER_USER: consumer_permissions(), "launcher": launcher_permissions()}


@dataclass(frozen=True)
class Credentials:
    passwords: dict[str, str]
    file: Path

    def env_for(self, service: str) -> dict[str, str]:
        """NATS_USER / NATS_PASSWORD of a service (by console script name)."""
        user = SERVICE_USERS[service]
        return {"NATS_USER": user, "NATS_PASSWORD": self.passwords[user]}

    @property
    def consumer(self) -> tuple[str, str]:
        return CONSUMER_USER, self.passwords[CONSUMER_USER]


def _write_private(path: Path, text: str) -> None:
    """Create with mode 0600 from the start (never world-readable, not even briefly)."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def ensure_credentials(directory: Path, users: dict[str, dict[str, Any]]) -> Credentials:
    """The passwords in `directory/credentials.json`, created (0600) for missing users."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    file = directory / "credentials.json"
    known: dict[str, str] = {}
    if file.exists():
        try:
            loaded = json.loads(file.read_text())
            known = {u: p for u, p in loaded.items() if isinstance(p, str) and p}
        except (ValueError, AttributeError):
            known = {}
    passwords = {user: known.get(user) or secrets.token_urlsafe(24) for user in users}
    if passwords != known:
        _write_private(file, json.dumps(passwords, indent=2) + "\n")
    os.chmod(file, 0o600)
    return Credentials(passwords, file)


def _subjects(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def authorization_config(users: dict[str, dict[str, Any]], passwords: dict[str, str]) -> str:
    """The nats-server `authorization` block: every user with its password and subjects."""
    entries = []
    for name, spec in users.items():
        responses = "\n        allow_responses: true" if spec.get("allow_responses") else ""
        entries.append(
            f"""    {{
      user: {json.dumps(name)}
      password: {json.dumps(passwords[name])}
      permissions: {{
        publish: {{ allow: {_subjects(spec["publish"])} }}
        subscribe: {{ allow: {_subjects(spec["subscribe"])} }}{responses}
      }}
    }}"""
        )
    body = "\n".join(entries)
    return f"authorization {{\n  users = [\n{body}\n  ]\n}}\n"


def tls_config(cert: str, key: str, ca: str | None, verify: bool) -> str:
    """The nats-server `tls` block; `verify`: clients must present a certificate `ca` signed."""
    lines = [f"  cert_file: {json.dumps(cert)}", f"  key_file: {json.dumps(key)}"]
    if ca:
        lines.append(f"  ca_file: {json.dumps(ca)}")
    if verify:
        lines.append("  verify: true")
    lines.append("  timeout: 5")
    return "tls {\n" + "\n".join(lines) + "\n}\n"


def server_config(directory: Path) -> tuple[Credentials, str]:
    """Credentials and the extra nats-server configuration `kernelbus run` starts with."""
    users = load_permissions()
    credentials = ensure_credentials(directory, users)
    extra = authorization_config(users, credentials.passwords)
    if tls_enabled():
        cert = os.environ["KERNELBUS_NATS_SERVER_TLS_CERT"]
        key = os.environ["KERNELBUS_NATS_SERVER_TLS_KEY"]
        ca = os.environ.get("NATS_TLS_CA") or None
        verify = bool(ca and os.environ.get("NATS_TLS_CERT"))  # the services present certs
        extra += tls_config(cert, key, ca, verify)
    return credentials, extra


def tls_enabled() -> bool:
    return bool(
        os.environ.get("KERNELBUS_NATS_SERVER_TLS_CERT")
        and os.environ.get("KERNELBUS_NATS_SERVER_TLS_KEY")
    )


def client_url(url: str) -> str:
    """The URL clients use: `tls://` when the embedded server serves TLS."""
    return url.replace("nats://", "tls://", 1) if tls_enabled() else url


def consumer_hint(credentials: Credentials) -> str:
    """How an events consumer logs in (printed by `kernelbus run`)."""
    user, password = credentials.consumer
    return f"events consumer (read-only): NATS_USER={user} NATS_PASSWORD={password}"
