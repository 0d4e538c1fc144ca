"""Dependencies that read as sentences in route signatures."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Path, Request

from kernelbus.messages import UUID_PATTERN
from kernelbus.registry import Registry
from kernelbus_api.kernels import Kernels
from kernelbus_api.sessions import Sessions
from kernelbus_api.settings import ApiSettings
from kernelbus_api.state import AppState


def _state(request: Request) -> AppState:
    return cast(AppState, request.app.state.kb)


def _registry(request: Request) -> Registry:
    return _state(request).registry


def _kernels(request: Request) -> Kernels:
    return _state(request).kernels


def _sessions(request: Request) -> Sessions:
    return _state(request).sessions


def _settings(request: Request) -> ApiSettings:
    return cast(ApiSettings, request.app.state.settings)


State = Annotated[AppState, Depends(_state)]
KernelRegistry = Annotated[Registry, Depends(_registry)]
KernelManager = Annotated[Kernels, Depends(_kernels)]
SessionManager = Annotated[Sessions, Depends(_sessions)]
Settings = Annotated[ApiSettings, Depends(_settings)]
KernelIdParam = Annotated[
    str, Path(pattern=UUID_PATTERN, description="A kernel id (lower-case UUID); else 404.")
]
