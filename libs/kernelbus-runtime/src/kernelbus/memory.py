"""glibc's malloc told to keep freed memory for the next large message (ADR 0025).

By default glibc serves every allocation above a dynamic threshold (128 KiB, rising to at
most the largest block freed) with its own mmap, unmapped again on free, and returns a
free heap top above twice that threshold to the kernel. A process that relays multi-MB
messages (api, worker, iopub keeper) then pays page faults on every fresh copy: the pages
are mapped, zeroed by the kernel and unmapped again for each message. Fixing both
thresholds keeps up to `keep_bytes` of freed heap mapped, and blocks below 32 MiB on the
heap, so the next message reuses pages already faulted in.

Only glibc has `mallopt`; elsewhere (musl) this does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks at least this big still get an mmap of their own (glibc's largest allowed)."""

DEFAULT_KEEP_BYTES = 64 * 1024 * 1024


def keep_freed_memory(keep_bytes: int) -> bool:
    """Keep up to `keep_bytes` of freed heap (0: leave glibc's defaults); True if applied."""
    if keep_bytes <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        log.info("no glibc mallopt here: freed memory is returned as the C library decides")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, min(MMAP_THRESHOLD, keep_bytes)))
    applied = bool(mallopt(M_TRIM_THRESHOLD, keep_bytes)) and applied
    if not applied:
        log.warning("mallopt refused the thresholds: large messages cost page faults")
    return applied
