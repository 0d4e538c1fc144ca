"""Find and kill, by pid, the processes a test left behind.

The test process makes itself a child subreaper (Linux `prctl(PR_SET_CHILD_SUBREAPER)`):
an orphan among its descendants is re-parented to it instead of to init, so a process that
started in a session of its own and lost its parent is still ours to find.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":  # a zombie is already dead; only its parent's wait is missing
            parents[int(entry.name)] = int(fields[1])
    return parents


def children(pid: int | None = None) -> set[int]:
    """Live direct children of `pid` (default: this process)."""
    me = os.getpid() if pid is None else pid
    return {child for child, parent in _parents().items() if parent == me}


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid`."""
    parents = _parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def kill_tree(pids: set[int]) -> list[str]:
    """SIGKILL `pids` and all their descendants; returns what was killed (pid and command)."""
    targets = set(pids)
    for pid in pids:
        targets |= descendants(pid)
    killed = []
    for pid in targets:
        line = command_line(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(f"{pid} {line}")
    _reap(targets)
    return killed


def _reap(pids: set[int], timeout: float = 2.0) -> None:
    """Wait for the killed processes that are our children (re-parented ones included)."""
    deadline = time.monotonic() + timeout
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours, or already reaped by its Popen
                pending.discard(pid)
                continue
            if done:
                pending.discard(pid)
        if pending:
            time.sleep(0.02)


def kill_new_children(before: set[int]) -> list[str]:
    """Kill every child of this process not in `before`, with its whole tree."""
    return kill_tree(children() - before)
