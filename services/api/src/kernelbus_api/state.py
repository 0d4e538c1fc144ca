"""Typed application state opened in the lifespan and handed to handlers."""

from __future__ import annotations

from dataclasses import dataclass

from kernelbus.bus import Connectivity
from kernelbus.bus_types import Client, JetStreamContext
from kernelbus.registry import Registry
from kernelbus_api.kernels import Kernels
from kernelbus_api.sessions import Sessions
from kernelbus_api.settings import ApiSettings


@dataclass
class AppState:
    settings: ApiSettings
    nc: Client
    js: JetStreamContext
    registry: Registry
    kernels: Kernels
    sessions: Sessions
    connectivity: Connectivity
