"""The events consumer names the exception type of a failed fetch (many NATS errors have an
empty message, which made `fetch failed: ` useless)."""

from __future__ import annotations

import nats.errors

from kernelbus.errors import describe_error


def test_an_error_without_a_message_is_named_by_its_type() -> None:
    assert describe_error(TimeoutError()) == "TimeoutError"
    closed = nats.errors.ConnectionClosedError()
    assert describe_error(closed) == f"ConnectionClosedError: {closed}"


def test_an_error_with_a_message_keeps_it_after_the_type() -> None:
    assert describe_error(OSError("connection refused")) == "OSError: connection refused"
