"""glibc's malloc told to keep freed memory for the next large message (ADR 0025).

By default glibc serves every allocation above a dynamic threshold (128 KiB, rising to at
most the largest block freed) with its own mmap, unmapped again on free, and returns a
free heap top above twice that threshold to the kernel. A process that relays multi-MB
messages (api, worker, iopub keeper) then pays page faults on every fresh copy: the pages
are mapped, zeroed by the kernel and unmapped again for each message. Fixing both
thresholds keeps up to `keep_bytes` of freed heap mapped, and blocks below 32 MiB on the
heap, so the next message reuses pages already faulted in.

Freed memory is not returned when a kernel goes either: glibc hands back only a free heap
top, and what a kernel's large messages left in the middle of the heap stays mapped. A worker
and a keeper whose kernels printed 20 MB outputs grew by ~57 MiB per deleted kernel (742 MiB
after 16; `release_freed_memory`, called after kernels were removed, gives it back).

Only glibc has `mallopt` and `malloc_trim`; elsewhere (musl) these do nothing and say so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from typing import Any

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks at least this big still get an mmap of their own (glibc's largest allowed)."""

DEFAULT_KEEP_BYTES = 128 * 1024 * 1024


def _libc_function(name: str) -> Any:
    """glibc's `name` as a ctypes function, or None."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c")), name)
    except (OSError, AttributeError, TypeError):
        log.info("no glibc %s here: freed memory is returned as the C library decides", name)
        return None


def keep_freed_memory(keep_bytes: int) -> bool:
    """Keep up to `keep_bytes` of freed heap (0: leave glibc's defaults); True if applied."""
    if keep_bytes <= 0:
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, min(MMAP_THRESHOLD, keep_bytes)))
    applied = bool(mallopt(M_TRIM_THRESHOLD, keep_bytes)) and applied
    if not applied:
        log.warning("mallopt refused the thresholds: large messages cost page faults")
    return applied


def release_freed_memory() -> bool:
    """Collect cyclic garbage, then return every free page to the kernel (`malloc_trim(0)`:
    the middle of the heap too); True if glibc released any. For after kernels were removed,
    not per message: both walk everything."""
    gc.collect()
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))
