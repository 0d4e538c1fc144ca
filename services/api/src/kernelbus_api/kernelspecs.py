"""Kernelspec models as jupyter_server's `kernelspec_model` shapes them, from worker heartbeats."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from kernelbus.models import KernelspecInfo, WorkerHeartbeat


def union(workers: list[WorkerHeartbeat]) -> dict[str, KernelspecInfo]:
    """Every kernelspec some live worker can run; the first worker seen wins a name."""
    specs: dict[str, KernelspecInfo] = {}
    for worker in sorted(workers, key=lambda w: w.worker_id):
        for spec in worker.kernelspecs:
            specs.setdefault(spec.name, spec)
    return specs


def resource_key(file: str) -> str | None:
    """`kernel.js`/`kernel.css` as they are; `logo-64x64.png` → `logo-64x64`; others none."""
    if file in ("kernel.js", "kernel.css"):
        return file
    if file.startswith("logo-"):
        return PurePosixPath(file).stem
    return None


def spec_model(info: KernelspecInfo, base_url: str) -> dict[str, Any]:
    resources = {
        key: f"{base_url}kernelspecs/{info.name}/{file}"
        for file in info.resource_files
        if (key := resource_key(file)) is not None
    }
    return {"name": info.name, "spec": info.spec, "resources": resources}


def select(specs: dict[str, KernelspecInfo], user: str | None) -> dict[str, KernelspecInfo]:
    """Tolerate `?user=`; `alice/py` (a known GatewayClient bug) means the single spec `py`."""
    if user and "/" in user:
        wanted = user.rsplit("/", 1)[1]
        return {wanted: specs[wanted]} if wanted in specs else {}
    return specs


def workers_with(workers: list[WorkerHeartbeat], name: str) -> list[WorkerHeartbeat]:
    return [w for w in workers if w.has_spec(name)]
