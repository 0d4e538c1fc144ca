"""The one module that knows nats-py: connecting, request/reply with typed errors, responders,
and the JetStream streams and KV buckets every service expects to exist."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar, cast, overload

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.kv import KeyValue
from opentelemetry.trace import Span, StatusCode
from pydantic import BaseModel, ValidationError

from kernelbus import chunking, subjects
from kernelbus.errors import (
    BadRequest,
    BusTimeout,
    BusUnavailable,
    KernelbusError,
    NoWorkerAvailable,
    PayloadTooLarge,
    describe_error,
    error_for,
)
from kernelbus.messages import CommandError, KernelReply, OkReply
from kernelbus.settings import BusSettings
from kernelbus.telemetry import handler_span, request_span

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound=OkReply)

DEFAULT_INBOX_PREFIX = "_INBOX"
_ROLE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def inbox_prefix(role: str | None) -> str:
    """`_INBOX_<role>` for a service role, `_INBOX` (nats-py's default) without one.

    A per-role prefix lets the NATS permissions grant each service user the replies to its
    own requests only (`_INBOX_api.>`), instead of everyone's (`_INBOX.>`).
    """
    if role is None:
        return DEFAULT_INBOX_PREFIX
    if not _ROLE.match(role):
        raise ValueError(f"invalid bus role {role!r}: must match {_ROLE.pattern}")
    return f"{DEFAULT_INBOX_PREFIX}_{role}"


Hook = Callable[[], Awaitable[None]]


@dataclass
class Connectivity:
    """Whether this process's NATS connection is up, and since when (monotonic seconds).

    Fed by the connection's callbacks, so a disconnect between two polls is never missed.
    Services judge by it what a missing answer means: during an outage, or right after one,
    an absent heartbeat or responder says nothing about the peer.
    """

    connected_since: float | None = field(default_factory=time.monotonic)
    disconnected_at: float | None = None
    outages: int = 0
    on_disconnected: list[Hook] = field(default_factory=list)
    on_reconnected: list[Hook] = field(default_factory=list)
    down: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while disconnected: `await connectivity.down.wait()` to react to an outage."""

    @property
    def connected(self) -> bool:
        return self.connected_since is not None

    def steady_for(self, seconds: float, now: float | None = None) -> bool:
        """Connected without a break for at least `seconds`."""
        now = time.monotonic() if now is None else now
        return self.connected_since is not None and now - self.connected_since >= seconds

    def reason(self) -> str:
        """Why the bus is unusable ("" when it is connected)."""
        if self.connected_since is not None:
            return ""
        since = self.disconnected_at or time.monotonic()
        return f"not connected to NATS (disconnected {time.monotonic() - since:.0f} s ago)"

    async def lost(self) -> None:
        if self.connected_since is None:
            return
        self.connected_since = None
        self.disconnected_at = time.monotonic()
        self.outages += 1
        self.down.set()
        for hook in self.on_disconnected:
            await _run_hook(hook)

    async def regained(self) -> None:
        self.connected_since = time.monotonic()
        self.disconnected_at = None
        self.down.clear()
        for hook in self.on_reconnected:
            await _run_hook(hook)


async def _run_hook(hook: Hook) -> None:
    try:
        await hook()
    except Exception:  # a failing hook must not stop nats-py's reconnect machinery
        log.exception("bus connectivity hook failed")


async def connect(
    settings: BusSettings,
    name: str,
    role: str | None = None,
    connectivity: Connectivity | None = None,
) -> Client:
    """Connect with a bounded first attempt loop, then reconnect forever.

    nats-py retries the initial connect `max_reconnect_attempts` times: bounded here so a
    missing NATS fails a service's start clearly, lifted afterwards so a restarted NATS is
    always rejoined, however long it was away. `role` ("api", "worker", ...) selects the
    reply inbox prefix (`inbox_prefix`); without it replies use the shared `_INBOX`.
    `connectivity`, when given, follows the connection's state (`Connectivity`).
    """
    prefix = inbox_prefix(role)
    tls_refused: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

    async def on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)
        # nats-py retries a failed TLS handshake with a half-closed transport and hangs:
        # a certificate problem is not transient, so the first attempt ends the connect.
        if isinstance(exc, ssl.SSLError) and not tls_refused.done():
            tls_refused.set_result(exc)

    async def on_disconnected() -> None:
        log.warning("disconnected from nats")
        if connectivity is not None:
            await connectivity.lost()

    async def on_reconnected() -> None:
        log.info("reconnected to nats")
        if connectivity is not None:
            await connectivity.regained()

    try:
        nc = await _first_of(
            tls_refused,
            nats.connect(
                servers=list(settings.nats_servers),
                name=name,
                inbox_prefix=prefix,
                user=settings.nats_user,
                password=settings.nats_password,
                tls=settings.nats_tls(),
                connect_timeout=2,
                reconnect_time_wait=0.5,
                max_reconnect_attempts=settings.nats_connect_attempts,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            ),
        )
    except (nats.errors.NoServersError, OSError) as exc:
        raise ConnectionError(f"cannot reach NATS at {settings.nats_url}: {exc}") from exc
    nc.options["max_reconnect_attempts"] = -1
    if connectivity is not None:
        connectivity.connected_since = time.monotonic()
    return nc


async def _first_of(refused: asyncio.Future[Exception], connecting: Awaitable[Client]) -> Client:
    """The connection, unless `refused` (a TLS failure) resolves first: then raise it."""
    task = asyncio.ensure_future(connecting)
    pending: set[asyncio.Future[object]] = {task, refused}  # type: ignore[arg-type]
    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise refused.result()


async def close(nc: Client) -> None:
    """Shut a connection down for good; never raises, so a lifespan's exit always completes.

    Connected: drain (subscriptions finish what they hold, pending publishes are flushed).
    Otherwise (NATS gone, reconnecting, already closed) `drain()` would raise
    `ConnectionReconnectingError`: close at once instead; nothing can be flushed anyway.
    """
    try:
        if nc.is_connected:
            await nc.drain()
            return
    except Exception as exc:  # a drain interrupted by a disconnect: fall back to close
        log.warning("nats drain failed (%s); closing", exc)
    try:
        await nc.close()
    except Exception as exc:  # closing is best effort at shutdown
        log.warning("nats close failed: %s", exc)


async def ensure_infrastructure(js: JetStreamContext, replicas: int = 0) -> None:
    """Create the streams and buckets if absent; idempotent, safe from every replica.

    `replicas` (setting `nats_replicas`): copies of each bucket and stream; 0 means
    min(3, cluster size), the size read from the connected server's INFO. Existing buckets
    and streams are left as they are. JetStream not answering (not enabled on the server, or
    no quorum) raises `BusUnavailable` saying so.
    """
    try:
        await _ensure_all(js, replicas or cluster_replicas(js))
    except nats.errors.Error as exc:
        raise BusUnavailable(
            f"JetStream did not set up the streams and buckets ({describe_error(exc)}): "
            "is JetStream enabled on the NATS server, with a quorum?"
        ) from exc


async def _ensure_all(js: JetStreamContext, replicas: int) -> None:
    await _ensure_kv(js, subjects.KERNELS_BUCKET, None, replicas)
    await _ensure_kv(js, subjects.WORKERS_BUCKET, subjects.WORKER_TTL, replicas)
    await _ensure_kv(js, subjects.CONNECTIONS_BUCKET, subjects.CONNECTIONS_TTL, replicas)
    await _ensure_kv(js, subjects.CULL_BUCKET, None, replicas)
    await _ensure_kv(js, subjects.STARTS_BUCKET, subjects.STARTS_TTL, replicas)
    await _ensure_kv(js, subjects.SESSIONS_BUCKET, None, replicas)
    await _ensure_kv(js, subjects.DRAINS_BUCKET, None, replicas)
    for spec in (subjects.EVENTS_STREAM, subjects.DEAD_LETTER_STREAM):
        await _ensure_stream(js, spec, replicas)


def cluster_replicas(js: JetStreamContext) -> int:
    """min(3, nodes of the cluster): the server's INFO lists the other nodes' client URLs
    (`connect_urls`); no cluster, no list. nats-py keeps INFO in a private attribute."""
    info = getattr(getattr(js, "_nc", None), "_server_info", None) or {}
    others = {str(url) for url in info.get("connect_urls") or []}
    if not info.get("cluster"):
        return 1
    return max(1, min(3, len(others) + 1))


async def _ensure_kv(
    js: JetStreamContext, bucket: str, ttl: float | None, replicas: int = 1
) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    # direct: any replica answers a get, so reads go on while a new leader is being elected
    # (a miss is re-read from the leader: `kernelbus.registry`).
    config = KeyValueConfig(
        bucket=bucket, history=1, storage=StorageType.FILE, replicas=replicas, direct=True
    )
    if ttl:
        config.ttl = ttl
    try:
        return await js.create_key_value(config=config)
    except nats.js.errors.BadRequestError:
        return await js.key_value(bucket)


async def _ensure_stream(
    js: JetStreamContext, spec: subjects.StreamSpec, replicas: int = 1
) -> None:
    try:
        await js.stream_info(spec.name)
        return
    except nats.js.errors.NotFoundError:
        pass
    config = StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        storage=StorageType.FILE,
        duplicate_window=120.0,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(config=config)
    except nats.js.errors.BadRequestError:
        await js.stream_info(spec.name)


async def wait_for_jetstream(nc: Client, timeout: float = 60.0) -> None:
    """Until JetStream answers on `nc`: a new cluster elects its meta leader first, and
    nothing that needs a stream or bucket can work before that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await nc.jetstream().account_info()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


FLUSH_TIMEOUT = 10.0
"""nats-py's default for a flush."""
FLUSH_BACKSTOP = 3600.0
"""Seconds nats-py itself waits for a flush's PONG (a reconnect forgets the PING anyway)."""
_flushes: set[asyncio.Future[None]] = set()


async def flush(nc: Client, timeout: float) -> None:
    """`nc.flush()`, given up after `timeout` (`BusTimeout`) without nats-py's pitfall
    (2.16): a flush that times out or is cancelled cancels its PING's future but leaves it
    queued, and the late PONG then raises InvalidStateError in the client's read loop, which
    stops reading for good. Here the round trip finishes in the background instead."""
    pending = asyncio.ensure_future(nc.flush(timeout=FLUSH_BACKSTOP))  # type: ignore[arg-type]
    _flushes.add(pending)
    pending.add_done_callback(_flush_done)
    try:
        await asyncio.wait_for(asyncio.shield(pending), timeout)
    except TimeoutError as exc:
        if not nc.is_connected:
            raise BusUnavailable(UNAVAILABLE) from exc
        raise BusTimeout(f"NATS did not answer a flush within {timeout:.0f} s") from exc
    except nats.errors.Error as exc:
        raise translate(exc, nc.is_connected) from exc


async def publish_frame(nc: Client, subject: str, frame: bytes, reply: str = "") -> None:
    """One Jupyter message's bus frame: a NATS message with no headers when it fits, else
    ordered chunks (`kernelbus.chunking`) that are views of `frame`, each with `reply`."""
    limit = nc.max_payload
    if len(frame) <= limit - chunking.HEADROOM:
        await nc.publish(subject, frame, reply=reply)
        return
    for headers, piece in chunking.split_views(frame, limit):
        # nats-py only takes len() of the payload and appends it to its command bytes.
        await nc.publish(subject, cast(bytes, piece), reply=reply, headers=headers)


def _flush_done(pending: asyncio.Future[None]) -> None:
    _flushes.discard(pending)
    if not pending.cancelled():
        pending.exception()  # retrieved: a closed connection's flush is nobody's concern


@overload
async def request(nc: Client, subject: str, command: BaseModel, timeout: float) -> KernelReply: ...


@overload
async def request(
    nc: Client, subject: str, command: BaseModel, timeout: float, reply_type: type[R]
) -> R: ...


async def request(
    nc: Client,
    subject: str,
    command: BaseModel,
    timeout: float,
    reply_type: type[OkReply] = KernelReply,
) -> OkReply:
    """Send a command; return its reply as `reply_type` or raise the typed error it names.

    No responder → `NoWorkerAvailable` at once (safe to retry). Timeout → `BusTimeout`
    (someone may have acted: retry only idempotent commands). Not connected to NATS →
    `BusUnavailable` at once, without waiting out the timeout.
    """
    if not nc.is_connected:
        raise BusUnavailable(UNAVAILABLE)
    payload = command.model_dump_json().encode()
    try:
        with request_span(subject) as headers:
            msg = await nc.request(subject, payload, timeout=timeout, headers=headers or None)
    except nats.errors.NoRespondersError as exc:
        raise NoWorkerAvailable("no kernel worker is available to take this request") from exc
    except nats.errors.TimeoutError as exc:
        if not nc.is_connected:
            raise BusUnavailable(UNAVAILABLE) from exc
        raise BusTimeout(f"no answer on {subject} within {timeout:.0f} s") from exc
    except nats.errors.Error as exc:
        raise translate(exc, nc.is_connected) from exc
    try:
        error = CommandError.model_validate_json(msg.data)
    except ValidationError:
        pass  # not an error reply: it must then be a `reply_type`
    else:
        raise error_for(error.code, error.message)
    try:
        return reply_type.model_validate_json(msg.data)
    except ValidationError as exc:
        raise KernelbusError(f"malformed reply on {subject}: {exc.error_count()} errors") from exc


UNAVAILABLE = "the message bus (NATS) is unavailable; retry shortly"
JETSTREAM_UNAVAILABLE = (
    "the kernel registry (NATS JetStream) is not answering, e.g. while a new leader is being "
    "elected after a NATS node was lost; retry shortly"
)


async def ping(
    nc: Client,
    subject: str,
    timeout: float,
    payload: bytes = b"",
    *,
    on_timeout: bool | None = None,
) -> bool | None:
    """Whether anyone answers on `subject`: True (answered); False (no responder: nobody is
    subscribed, which the server says at once); `on_timeout` when no answer came in time on a
    connected bus (None, "unknown", by default; a liveness probe passes True: someone is
    subscribed but slow, and a loaded host is not a lost one); None when this connection
    cannot tell (not connected, or the bus failed meanwhile)."""
    if not nc.is_connected:
        return None
    try:
        await nc.request(subject, payload, timeout=timeout)
    except nats.errors.NoRespondersError:
        return False if nc.is_connected else None
    except nats.errors.TimeoutError:
        return on_timeout if nc.is_connected else None
    except nats.errors.Error:
        return None
    return True


def translate(exc: nats.errors.Error, connected: bool) -> KernelbusError:
    """The typed error a raw nats-py error means, for callers that reach the bus directly
    (JetStream KV reads of the registry): the one place nats-py's errors are interpreted.

    Disconnected, reconnecting, closed, an outbound buffer full while reconnecting, or
    JetStream not (yet) answering after a restart all mean "the bus is unavailable" (503,
    safe to retry); a timeout on a connected bus is a `BusTimeout`.
    """
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PayloadTooLarge(str(exc))
    if connected and isinstance(exc, nats.errors.TimeoutError):
        # Callers of `translate` reach JetStream (KV, streams): connected and no answer means
        # the stream has no leader (a cluster lost a node and is electing one, seconds).
        return BusUnavailable(JETSTREAM_UNAVAILABLE)
    unavailable = (
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.ConnectionDrainingError,
        nats.errors.OutboundBufferLimitError,
        nats.errors.NoServersError,
        nats.errors.StaleConnectionError,
        nats.errors.TimeoutError,
        nats.errors.NoRespondersError,
        nats.js.errors.ServiceUnavailableError,
        nats.js.errors.NoStreamResponseError,
    )
    if not connected or isinstance(exc, unavailable):
        return BusUnavailable(UNAVAILABLE)
    return KernelbusError(f"message bus error: {type(exc).__name__}: {exc}")


async def fetch(sub: JetStreamContext.PullSubscription, batch: int, timeout: float) -> list[Msg]:
    """Up to `batch` messages of a pull consumer; [] when none came within `timeout`.
    Any other failure (NATS away) raises the `KernelbusError` it means."""
    try:
        return await sub.fetch(batch, timeout=timeout)
    except nats.errors.TimeoutError:
        return []
    except nats.errors.Error as exc:
        raise translate(exc, False) from exc


Handler = Callable[[M, Msg], Awaitable[OkReply]]


async def respond(msg: Msg, reply: OkReply | CommandError) -> None:
    if msg.reply:
        await msg.respond(reply.model_dump_json().encode())


def responder(parse: Callable[[bytes], M], handler: Handler[M]) -> Callable[[Msg], Awaitable[None]]:
    """Wrap a command handler: validate the payload, map typed errors to `CommandError`.

    A malformed command changes nothing and gets `bad_request` with the validation message.
    """

    async def on_msg(msg: Msg) -> None:
        with handler_span(msg.subject, msg.headers) as span:
            reply = await _answer(msg, parse, handler, span)
            if isinstance(reply, CommandError):
                span.set_status(StatusCode.ERROR, reply.code)
            await respond(msg, reply)

    return on_msg


async def _answer(
    msg: Msg, parse: Callable[[bytes], M], handler: Handler[M], span: Span
) -> OkReply | CommandError:
    try:
        command = parse(msg.data)
    except (ValidationError, ValueError) as exc:
        return CommandError(code="bad_request", message=_describe(exc))
    span.update_name(f"handle {type(command).__name__}")
    try:
        return await handler(command, msg)
    except KernelbusError as exc:
        return CommandError(code=exc.code, message=exc.message)
    except nats.errors.Error as exc:
        # JetStream (a registry write) unavailable, e.g. while a cluster elects a new stream
        # leader after losing a node: the typed error (503), not an internal one.
        client = getattr(msg, "_client", None)
        error = translate(exc, bool(getattr(client, "is_connected", True)))
        log.warning("command on %s: bus error %r", msg.subject, exc)
        return CommandError(code=error.code, message=error.message)
    except Exception as exc:
        log.exception("command on %s failed", msg.subject)
        return CommandError(code="internal", message=f"internal error: {exc}")


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        return f"invalid command: {where}: {first.get('msg', 'invalid')}"
    return f"invalid command: {exc}"


def parse_with(model: type[M]) -> Callable[[bytes], M]:
    def parse(data: bytes) -> M:
        return model.model_validate_json(data)

    return parse


__all__ = [
    "BadRequest",
    "Connectivity",
    "close",
    "connect",
    "ensure_infrastructure",
    "fetch",
    "inbox_prefix",
    "parse_with",
    "ping",
    "request",
    "respond",
    "responder",
    "translate",
]


# --- liveness pings -----------------------------------------------------------------------


async def answer_pings(nc: Client, subject: str) -> None:
    """Answer every request on `subject` with an empty reply, for the connection's life: the
    other side of `ping` (a host's liveness subject)."""

    async def pong(msg: Msg) -> None:
        if msg.reply:
            await msg.respond(b"")

    await nc.subscribe(subject, cb=pong)
    await nc.flush()
