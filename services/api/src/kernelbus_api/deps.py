"""Dependencies that read as sentences in route signatures."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from kernelbus.registry import Registry
from kernelbus_api.state import AppState


def _state(request: Request) -> AppState:
    return cast(AppState, request.app.state.kb)


def _registry(request: Request) -> Registry:
    return _state(request).registry


State = Annotated[AppState, Depends(_state)]
KernelRegistry = Annotated[Registry, Depends(_registry)]
