"""Exit in milliseconds, not seconds, once a service has shut down cleanly.

At interpreter exit CPython runs one last full garbage collection over every object the
service ever imported or built (pydantic models, JSON Schema registries, telemetry): 1-3 s on
a busy machine, which made up much of a Ctrl-C on `kernelbus run`. Nothing is left to clean at
that point (connections are closed, logs flushed by then), so the objects are frozen out of
that collection (`gc.freeze()`, run as the last atexit callback).
"""

from __future__ import annotations

import atexit
import gc


def skip_final_collection() -> None:
    """Call once at startup. The freeze happens during atexit, so it only changes the final
    collection, which runs after every atexit callback."""
    atexit.register(gc.freeze)
