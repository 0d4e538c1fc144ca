"""`kernelbus-sim-provisioner`: a jupyter_client kernel provisioner whose kernels live in one
shared host process per worker (`kernelbus_worker.sim.host`), for tests and benchmarks.

It is selected only by a kernelspec naming it in `metadata.kernel_provisioner` — such a
kernelspec is written by tests and `bench/scale.py` into a temporary JUPYTER_PATH, never
installed (see `write_kernelspec`). Everything else in the worker (AsyncKernelManager, the ZMQ
bridge, restarts, shutdown) runs exactly as for a real kernel.

Kernels of this provisioner cannot be re-adopted by a restarted worker: the host ends with
the worker that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase

log = logging.getLogger(__name__)

NAME = "kernelbus-sim-provisioner"
SPEC_NAME = "kernelbus-sim"


def write_kernelspec(jupyter_path_dir: Path, name: str = SPEC_NAME) -> Path:
    """Write the simulated kernel's kernelspec under `<jupyter_path_dir>/kernels/<name>`
    (point JUPYTER_PATH at `jupyter_path_dir`)."""
    spec_dir = jupyter_path_dir / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "kernelbus_worker.sim.host"],
        "display_name": "Simulated kernel (Kernelbus tests)",
        "language": "sim",
        "interrupt_mode": "message",
        "metadata": {"kernel_provisioner": {"provisioner_name": NAME}},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir


class _Host:
    """The host process of this worker and the exits it reported."""

    def __init__(self, process: asyncio.subprocess.Process, directory: str, pid: int) -> None:
        self.process = process
        self.dir = directory
        self.pid = pid
        self.exits: dict[str, int] = {}
        self.waiters: dict[str, asyncio.Future[bool]] = {}
        self.ended: dict[str, asyncio.Event] = {}
        self.serial = itertools.count(1)
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, argv: list[str]) -> _Host:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**24,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        hello = json.loads(line)
        log.info("simulated-kernel host started (pid %s)", hello["pid"])
        return cls(process, str(hello["dir"]), int(hello["pid"]))

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            if "exited" in message:
                kernel_id = str(message["exited"])
                self.exits[kernel_id] = int(message["code"])
                self.ended.setdefault(kernel_id, asyncio.Event()).set()
            for key, ok in (("started", True), ("failed", False)):
                if key in message:
                    waiter = self.waiters.pop(str(message[key]), None)
                    if waiter is not None and not waiter.done():
                        if ok:
                            waiter.set_result(True)
                        else:
                            waiter.set_exception(RuntimeError(str(message.get("error"))))
        # The host is gone: every kernel it had is gone with it.
        for kernel_id, event in self.ended.items():
            self.exits.setdefault(kernel_id, -signal.SIGKILL)
            event.set()
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(RuntimeError("the simulated-kernel host exited"))

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not self.reader.done()

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())

    async def start(self, kernel_id: str, info: dict[str, Any]) -> None:
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiters[kernel_id] = waiter
        self.ended[kernel_id] = asyncio.Event()
        self.exits.pop(kernel_id, None)
        self.send({"op": "start", "kernel_id": kernel_id, "info": info})
        await waiter


_host: _Host | None = None
_host_lock: asyncio.Lock | None = None


async def _get_host(argv: list[str]) -> _Host:
    global _host, _host_lock
    if _host_lock is None:
        _host_lock = asyncio.Lock()
    async with _host_lock:
        if _host is None or not _host.alive:
            _host = await _Host.spawn(argv)
        return _host


class SimProvisioner(KernelProvisionerBase):
    """One simulated kernel in the worker's shared host process."""

    host: _Host | None = None
    serial: int = 0

    @property
    def has_process(self) -> bool:
        return self.host is not None

    def _key(self) -> str:
        return str(self.kernel_id)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        km: Any = self.parent
        assert km is not None
        host = await _get_host(list(self.kernel_spec.argv))
        self.host = host
        self.serial = next(host.serial)
        km.transport = "ipc"
        km.ip = f"{host.dir}/k{self.serial}"
        km.shell_port, km.iopub_port, km.stdin_port, km.control_port, km.hb_port = 1, 2, 3, 4, 5
        km.write_connection_file()
        kwargs = await super().pre_launch(**kwargs)
        kwargs["cmd"] = list(self.kernel_spec.argv)
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        assert self.host is not None
        km: Any = self.parent
        info: KernelConnectionInfo = km.get_connection_info()
        plain = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in info.items()}
        await self.host.start(self._key(), plain)
        self.connection_info = info
        return info

    async def poll(self) -> int | None:
        if self.host is None:
            return 0
        return self.host.exits.get(self._key())

    async def wait(self) -> int | None:
        if self.host is None:
            return 0
        event = self.host.ended.get(self._key())
        if event is not None:
            await event.wait()
        return self.host.exits.get(self._key(), 0)

    async def send_signal(self, signum: int) -> None:
        if self.host is not None and self.host.alive:
            self.host.send({"op": "signal", "kernel_id": self._key(), "signum": int(signum)})

    async def kill(self, restart: bool = False) -> None:
        if self.host is not None and self.host.alive:
            self.host.send({"op": "kill", "kernel_id": self._key()})

    async def terminate(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        if self.host is not None:
            key = self._key()
            self.host.exits.pop(key, None)
            self.host.ended.pop(key, None)
        if not restart:
            self.host = None

    async def get_provisioner_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await super().get_provisioner_info()
        if self.host is not None:
            info["pid"] = self.host.pid
        return info


async def stop_host() -> None:
    """End this process's host (its kernels end with it); for tests."""
    global _host
    host, _host = _host, None
    if host is not None:
        with contextlib.suppress(Exception):
            assert host.process.stdin is not None
            host.process.stdin.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(host.process.wait(), 10)
