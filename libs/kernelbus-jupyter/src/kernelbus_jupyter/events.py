"""A `logging.Handler` that forwards jupyter_server's events to Kernelbus over HTTP.

Configure jupyter_server with::

    from kernelbus_jupyter.events import KernelbusEventHandler
    c.EventLogger.handlers = [KernelbusEventHandler(url="http://gateway:8889", token="...")]

Each capsule is POSTed to `<url>/api/events` by a daemon thread, so jupyter_server's request
path only pays for a queue put. Stdlib only: jupyter_server's environment needs nothing else
than this module (and the package it comes in). A failed POST is retried with the same
`Kb-Event-Id`, so the events service stores it once; when the queue is full the newest event
is dropped with a warning rather than blocking jupyter_server.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

EVENT_ID_HEADER = "Kb-Event-Id"
"""`kernelbus.events.EVENT_ID_HEADER`, spelled again because this module imports nothing but
the standard library (jupyter_server loads it); a unit test keeps the two equal."""

log = logging.getLogger(__name__)

_STOP = object()


class KernelbusEventHandler(logging.Handler):
    """Forwards every jupyter_events capsule it receives to the Kernelbus events service."""

    def __init__(
        self,
        url: str,
        token: str = "",
        max_queue: int = 10_000,
        retries: int = 5,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(level=logging.INFO)
        self.endpoint = url.rstrip("/") + "/api/events"
        self.token = token
        self.retries = retries
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self._queue: queue.Queue[Any] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._ensure_sender()

    def _ensure_sender(self) -> None:
        """(Re)start the sending thread.

        Applications that configure logging with `dictConfig` (traitlets, so jupyter_server)
        close every existing handler, ours included, while it stays attached to the
        EventLogger: a closed handler that receives an event starts sending again.
        """
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="kernelbus-events", daemon=True
                )
                self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        capsule = record.msg if isinstance(record.msg, dict) else None
        if capsule is None:
            return
        self._ensure_sender()
        try:
            self._queue.put_nowait((uuid.uuid4().hex, json.dumps(capsule).encode()))
        except queue.Full:
            self.failed += 1
            log.warning("Kernelbus event queue full; event dropped")

    def flush(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until every queued event was posted or given up on."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        """Flush, then stop the sending thread (a later event starts it again)."""
        self.flush()
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout=5)
        super().close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._post_with_retry(*item)
            finally:
                self._queue.task_done()

    def _post_with_retry(self, event_id: str, body: bytes) -> None:
        delay = 0.1
        for _ in range(self.retries):
            outcome = self._post(event_id, body)
            if outcome == "sent":
                self.sent += 1
                return
            if outcome == "refused":  # retrying a refused event cannot succeed
                break
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        self.failed += 1
        log.error("Kernelbus event %s not delivered to %s", event_id, self.endpoint)

    def _post(self, event_id: str, body: bytes) -> str:
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: event_id}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        request = urllib.request.Request(self.endpoint, body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return "sent" if 200 <= int(response.status) < 300 else "retry"
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500:
                log.error("Kernelbus refused an event (%s): %s", exc.code, exc.read()[:500])
                return "refused"
            return "retry"
        except OSError:
            return "retry"
