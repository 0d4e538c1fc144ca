"""How a service's start fails: its composition root releases what it acquired so far (an
`AsyncExitStack`), then the entry point prints one clear line and exits with status 1."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from kernelbus.errors import describe_error


class StartFailed(Exception):
    """A service could not start; what it had acquired has been released."""


@asynccontextmanager
async def starting(service: str) -> AsyncIterator[None]:
    """Wrap a start-up: any failure inside becomes `StartFailed` naming the service and why."""
    try:
        yield
    except Exception as exc:
        raise StartFailed(f"{service} could not start: {describe_error(exc)}") from exc


def run_service(service: str, main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run(main)`; a `StartFailed` is printed as one line on stderr, exit status 1."""
    try:
        asyncio.run(main)
    except StartFailed as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
