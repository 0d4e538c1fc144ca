"""Typed domain errors shared by every service.

Each carries a stable `code` that crosses the bus in a `CommandError` reply; the api maps codes
to HTTP statuses in one place (`kernelbus_api.errors`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorCode = Literal[
    "bad_request",
    "no_such_kernel",
    "no_such_kernelspec",
    "no_such_resource",
    "capacity",
    "launch_failed",
    "launch_timeout",
    "restart_failed",
    "no_worker",
    "bus_timeout",
    "bus_unavailable",
    "payload_too_large",
    "internal",
]


class KernelbusError(Exception):
    code: ClassVar[ErrorCode] = "internal"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class BadRequest(KernelbusError):
    code = "bad_request"


class NoSuchKernel(KernelbusError):
    code = "no_such_kernel"


class NoSuchKernelspec(KernelbusError):
    code = "no_such_kernelspec"


class NoSuchResource(KernelbusError):
    code = "no_such_resource"


class CapacityExceeded(KernelbusError):
    code = "capacity"


class LaunchFailed(KernelbusError):
    code = "launch_failed"


class LaunchTimeout(KernelbusError):
    code = "launch_timeout"


class RestartFailed(KernelbusError):
    code = "restart_failed"


class NoWorkerAvailable(KernelbusError):
    code = "no_worker"


class BusTimeout(KernelbusError):
    code = "bus_timeout"


class BusUnavailable(KernelbusError):
    """This process is not connected to NATS (an outage, or a reconnect under way)."""

    code = "bus_unavailable"


class PayloadTooLarge(KernelbusError):
    code = "payload_too_large"


class InternalError(KernelbusError):
    code = "internal"


_BY_CODE: dict[str, type[KernelbusError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        NoSuchKernel,
        NoSuchKernelspec,
        NoSuchResource,
        CapacityExceeded,
        LaunchFailed,
        LaunchTimeout,
        RestartFailed,
        NoWorkerAvailable,
        BusTimeout,
        BusUnavailable,
        PayloadTooLarge,
        InternalError,
    )
}


def describe_error(exc: BaseException) -> str:
    """`Type: message`, or only the type: many errors (nats-py's) have an empty message."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def error_for(code: str, message: str) -> KernelbusError:
    """Rebuild the typed error a `CommandError` reply names."""
    return _BY_CODE.get(code, InternalError)(message)
