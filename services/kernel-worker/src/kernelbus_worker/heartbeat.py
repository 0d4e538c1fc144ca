"""The worker's heartbeat: capacity, running kernels and kernelspecs, into KV with a TTL."""

from __future__ import annotations

import socket
from datetime import datetime

from kernelbus.models import WorkerHeartbeat
from kernelbus_worker.kernelspecs import Catalog
from kernelbus_worker.settings import WorkerSettings
from kernelbus_worker.supervisor import Supervisor


def heartbeat(
    settings: WorkerSettings, supervisor: Supervisor, catalog: Catalog, started_at: datetime
) -> WorkerHeartbeat:
    names = catalog.names()
    return WorkerHeartbeat(
        worker_id=settings.id,
        max_kernels=settings.max_kernels,
        running_kernels=supervisor.running,
        kernelspecs=catalog.infos(),
        default_kernel_name="python3" if "python3" in names else (names[0] if names else None),
        pooled_kernels=supervisor.pool.counts(),
        started_at=started_at,
        hostname=socket.gethostname(),
    )
