"""Waiting in tests without sleep-and-hope: poll state another process owns, and gate a
kernel's cell on a step the test takes."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Condition = Callable[[], object]
"""Plain or async; its (awaited) result counts by truth, so a non-empty list holds too."""


async def until(
    condition: Condition, timeout: float = 30, what: str = "condition", interval: float = 0.05
) -> None:
    """Poll `condition` (plain or async) until it holds; fail after a generous `timeout`.

    For state that lives in another process (the registry, a log, a file), which has no local
    event to await. The timeout is a deadline against hanging, never an assertion on speed.
    """
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = condition()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


@dataclass(frozen=True)
class FileGate:
    """A cell that waits, inside the kernel, until the test opens the gate (creates a file).

    Replaces `time.sleep(1)` used to order a kernel's output after a step of the test: the
    output comes exactly when the test says so, however loaded the machine is.
    """

    path: Path

    def wait_code(self) -> str:
        """Python statements for the cell: block until the gate is open."""
        return (
            "import pathlib as _gate_pathlib, time as _gate_time\n"
            f"while not _gate_pathlib.Path({str(self.path)!r}).exists():\n"
            "    _gate_time.sleep(0.01)\n"
        )

    def open(self) -> None:
        self.path.touch()
