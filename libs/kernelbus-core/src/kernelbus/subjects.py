"""Every NATS subject, stream and KV bucket Kernelbus uses, declared once as values.

Handlers never spell a subject string; they call these functions. Kernel and worker ids are
UUIDs or `[A-Za-z0-9_-]` tokens, valid both as subject tokens and as KV keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "kb"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def _token(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"not a valid subject token: {value!r}")
    return value


# --- commands (request/reply) -------------------------------------------------------------


def worker_start(worker_id: str) -> str:
    """Start a kernel on one chosen worker (placement is decided by the api)."""
    return f"{PREFIX}.worker.{_token(worker_id)}.start"


def worker_resource(worker_id: str) -> str:
    """Fetch a kernelspec resource file (logo, kernel.js) from a worker that has the spec."""
    return f"{PREFIX}.worker.{_token(worker_id)}.resource"


def worker_ping(worker_id: str) -> str:
    """Liveness of one worker's host: answered by the worker from connect to close and, in the
    compose image, by kernelbus-worker-init for the container's life. No responder means no
    connection is left (NATS answers that at once); a slow answer still means one is."""
    return f"{PREFIX}.worker.{_token(worker_id)}.ping"


def kernel_command(kernel_id: str) -> str:
    """Interrupt, restart or shut down a kernel; answered by the worker that owns it."""
    return f"{PREFIX}.kernel.{_token(kernel_id)}.cmd"


def kernel_attach(kernel_id: str) -> str:
    """A websocket connection opens or closes on a kernel; answered by the owning worker."""
    return f"{PREFIX}.kernel.{_token(kernel_id)}.attach"


def api_ping(api_instance: str) -> str:
    """Liveness of one api replica: no responder means it is gone with its websockets."""
    return f"{PREFIX}.api.{_token(api_instance)}.ping"


# --- kernel message streams ---------------------------------------------------------------


def undelivered_input(api_instance: str) -> str:
    """Prefix of the reply subjects an api replica gives client messages (`input_reply`):
    NATS sends its "no responders" status there when no worker received one."""
    return f"{PREFIX}.api.{_token(api_instance)}.undelivered"


def input_reply(api_instance: str, conn_id: str, seq: int) -> str:
    """The reply subject of a client message: its connection and its sequence number on that
    connection (1, 2, ...). Nobody answers it; NATS's "no responders" goes there, and the
    worker reads the number to know which messages of the connection it received."""
    return f"{undelivered_input(api_instance)}.{_token(conn_id)}.{seq:d}"


@dataclass(frozen=True)
class InputReply:
    """The parts of an `input_reply` subject."""

    api_instance: str
    conn_id: str
    seq: int


def parse_input_reply(subject: str | None) -> InputReply | None:
    """The parts of an `input_reply` subject; None for anything else."""
    parts = (subject or "").split(".")
    if len(parts) != 6 or parts[0] != PREFIX or parts[1] != "api" or parts[3] != "undelivered":
        return None
    _, _, api_instance, _, conn_id, seq = parts
    if not (_TOKEN.match(api_instance) and _TOKEN.match(conn_id)):
        return None
    if not (seq.isascii() and seq.isdigit() and len(seq) <= 18):
        return None
    return InputReply(api_instance, conn_id, int(seq))


def kernel_input(kernel_id: str) -> str:
    """Client-to-kernel Jupyter messages (one NATS message per Jupyter message), each with an
    `input_reply` subject: the connection its replies are routed back to, and its number."""
    return f"{PREFIX}.kernel.{_token(kernel_id)}.in"


def kernel_iopub(kernel_id: str) -> str:
    """Kernel-to-everyone messages: iopub, broadcast to every connection of the kernel."""
    return f"{PREFIX}.kernel.{_token(kernel_id)}.iopub"


def connection(conn_id: str) -> str:
    """Messages for one websocket connection: shell/control/stdin replies, replays."""
    return f"{PREFIX}.conn.{_token(conn_id)}"


# --- events -------------------------------------------------------------------------------

EVENTS_SUBJECT_PREFIX = f"{PREFIX}.events"


def event_subject(schema_id: str) -> str:
    """Subject an event of the schema `schema_id` is published on.

    `https://events.jupyter.org/jupyter_server/kernel_actions/v1` becomes
    `kb.events.jupyter_server.kernel_actions.v1`, so subscribers can filter per schema with
    `kb.events.jupyter_server.>` or `kb.events.*.kernel_actions.*`.
    """
    path = schema_id.split("://", 1)[-1]
    parts = [p for p in path.split("/")[1:] if p]
    tokens = [re.sub(r"[^A-Za-z0-9_-]", "_", p) for p in parts] or ["unknown"]
    return ".".join([EVENTS_SUBJECT_PREFIX, *tokens])


DEAD_LETTER_SUBJECT = f"{PREFIX}.deadletter.events"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]


EVENTS_STREAM = StreamSpec("KERNELBUS_EVENTS", (f"{EVENTS_SUBJECT_PREFIX}.>",))
DEAD_LETTER_STREAM = StreamSpec("KERNELBUS_DEADLETTER", (DEAD_LETTER_SUBJECT,))

# --- KV buckets ---------------------------------------------------------------------------

KERNELS_BUCKET = "kb_kernels"
"""kernel_id -> KernelRecord JSON. Written by the owning worker."""

WORKERS_BUCKET = "kb_workers"
"""worker_id -> WorkerHeartbeat JSON; entries age out after WORKER_TTL seconds."""

CONNECTIONS_BUCKET = "kb_connections"
"""`<kernel_id>.<api_instance>` -> open websocket count; aged out if an api replica dies."""

CULL_BUCKET = "kb_cull"
"""kernel_id -> culling lease, so that several cullers cull one kernel once."""

STARTS_BUCKET = "kb_starts"
"""Admission of kernel starts across api replicas (max_kernels): a `gate` key updated with
compare-and-set serialises admissions, and `start.<kernel_id>` keys hold in-flight starts."""

STARTS_TTL = 3700.0
"""Longer than any launch timeout (≤ 3600 s): a reservation left by a dead api replica ages out."""

SESSIONS_BUCKET = "kb_sessions"
"""session_id -> api session (jupyter_server's model: path, name, type, kernel_id)."""

DRAINS_BUCKET = "kb_drains"
"""worker_id -> drain note: no new kernel is placed on a drained worker (its kernels run on)."""

WORKER_TTL = 10.0
CONNECTIONS_TTL = 30.0
