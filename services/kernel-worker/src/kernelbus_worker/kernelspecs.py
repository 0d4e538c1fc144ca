"""The kernelspecs this worker offers, read through jupyter_client's KernelSpecManager."""

from __future__ import annotations

import base64
import mimetypes
import os
import time
from dataclasses import dataclass
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel

from kernelbus.errors import NoSuchKernelspec, NoSuchResource
from kernelbus.messages import ResourceReply
from kernelbus.models import KernelspecInfo

RESOURCE_PREFIXES = ("logo-",)
RESOURCE_FILES = ("kernel.js", "kernel.css")


RESCAN_SECONDS = 30.0
"""Kernelspecs installed while a worker runs are announced within this many seconds."""


@dataclass
class Catalog:
    manager: KernelSpecManager
    allowed: list[str]
    _cached: tuple[float, list[KernelspecInfo]] | None = None

    @classmethod
    def create(cls, allowed: list[str]) -> Catalog:
        return cls(KernelSpecManager(), allowed)

    def names(self) -> list[str]:
        found = sorted(self.manager.find_kernel_specs())
        return [n for n in found if not self.allowed or n in self.allowed]

    def spec(self, name: str) -> KernelSpec:
        if name not in self.names():
            raise NoSuchKernelspec(f"No such kernel named {name}")
        try:
            return self.manager.get_kernel_spec(name)
        except NoSuchKernel as exc:
            raise NoSuchKernelspec(f"No such kernel named {name}") from exc

    def infos(self) -> list[KernelspecInfo]:
        """What the heartbeat announces; rescanned from disk at most every RESCAN_SECONDS."""
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > RESCAN_SECONDS:
            self._cached = (now, self._scan())
        return self._cached[1]

    def _scan(self) -> list[KernelspecInfo]:
        infos = []
        for name in self.names():
            try:
                spec = self.manager.get_kernel_spec(name)
            except (NoSuchKernel, ValueError, OSError):
                continue
            infos.append(
                KernelspecInfo(name=name, spec=_spec_dict(spec), resource_files=_resources(spec))
            )
        return infos

    def resource(self, name: str, file: str) -> ResourceReply:
        """A resource file's bytes (base64) and MIME type; only logo-*, kernel.js, kernel.css."""
        spec = self.spec(name)
        if file not in _resources(spec):
            raise NoSuchResource(f"Kernel spec {name} has no resource {file}")
        path = os.path.join(spec.resource_dir, file)
        with open(path, "rb") as handle:
            content = handle.read()
        mime = mimetypes.guess_type(file)[0] or "application/octet-stream"
        return ResourceReply(content_b64=base64.b64encode(content).decode(), mime=mime)


def _spec_dict(spec: KernelSpec) -> dict[str, Any]:
    data: dict[str, Any] = spec.to_dict()
    data.setdefault("metadata", {})
    data.setdefault("env", {})
    return data


def _resources(spec: KernelSpec) -> list[str]:
    try:
        files = sorted(os.listdir(spec.resource_dir))
    except OSError:
        return []
    return [
        f
        for f in files
        if (f in RESOURCE_FILES or f.startswith(RESOURCE_PREFIXES))
        and os.path.isfile(os.path.join(spec.resource_dir, f))
    ]
