"""KERNELBUS_WORKER_KERNEL_TRANSPORT=ipc: kernels listen on Unix sockets in the worker's
private runtime dir instead of loopback TCP ports any local user can connect to (iopub needs
no key to be read). Warm pool, execution, restart and re-adoption by a successor worker work
as with tcp."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from channels_support import open_socket

from kernelbus.processes import wait_for
from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = pytest.mark.integration


@pytest.fixture
def short_runtime() -> Iterator[Path]:
    """Unix socket paths are limited to 107 bytes: a short runtime dir of this test's own."""
    path = Path(tempfile.mkdtemp(prefix="kb-ipc-"))
    path.chmod(0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _run(api: ApiProcess, kernel_id: str, code: str) -> str:
    socket = await open_socket(api, kernel_id)
    try:
        outputs = await socket.run(code)
    finally:
        await socket.close()
    return "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")


def _tcp_listen_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def test_ipc_kernels_run_restart_and_are_readopted(
    services: Services, short_runtime: Path, tmp_path: Path
) -> None:
    env = {
        "KERNELBUS_WORKER_ID": "ipc-worker",
        "KERNELBUS_WORKER_KERNEL_TRANSPORT": "ipc",
        "KERNELBUS_WORKER_RUNTIME_DIR": str(short_runtime),
        "KERNELBUS_WORKER_POOL": "python3=1",
    }
    services.runtime_dir = short_runtime  # orphans are swept from here after the test
    first = services.worker(env)
    api = services.api()
    with httpx.Client(base_url=api.url, headers=api.headers, timeout=90) as http:
        created = http.post("/api/kernels", json={"name": "python3"})
        assert created.status_code == 201, created.text
        kid = created.json()["id"]
        pid = int(asyncio.run(_run(api, kid, "import os; print(os.getpid())")))
        # A warm-pool kernel keeps the connection file named after its pool id: take the one
        # the kernel process was started with.
        connection_file = _connection_file_of(pid)
        assert connection_file.parent == short_runtime
        info: dict[str, Any] = json.loads(connection_file.read_text())
        assert info["transport"] == "ipc"
        assert stat.S_IMODE(connection_file.stat().st_mode) == 0o600  # the HMAC key
        sockets = [Path(f"{info['ip']}-{info[f'{c}_port']}") for c in ("shell", "iopub")]
        for path in sockets:
            mode = path.stat().st_mode
            assert stat.S_ISSOCK(mode) and not mode & stat.S_IWOTH, path
        # No channel on TCP. ipykernel itself still binds one loopback PULL socket for the
        # output of forked subprocesses; it accepts only messages carrying a per-process
        # secret and sends nothing (docs/security.md).
        assert len(_socket_inodes(pid) & _tcp_listen_inodes()) <= 1
        assert asyncio.run(_run(api, kid, "kept = 6 * 7; print(kept)")) == "42\n"
        restarted = http.post("/api/kernels", json={"name": "python3"}).json()["id"]
        assert asyncio.run(_run(api, restarted, "kept = 1; print(kept)")) == "1\n"
        assert http.post(f"/api/kernels/{restarted}/restart").status_code == 200
        assert asyncio.run(_run(api, restarted, "print(globals().get('kept'))")) == "None\n"
        assert http.delete(f"/api/kernels/{restarted}").status_code == 204
        first.kill()  # the kernel outlives its worker; a successor adopts it over ipc
        second = services.worker(env)
        wait_for(lambda: _adopted(second.log(), kid), 90, "the adoption", second)
        try:
            assert asyncio.run(_run(api, kid, "print(kept)")) == "42\n"
        except TimeoutError:
            pytest.fail(f"no output from the adopted kernel; the worker said:\n{second.log()}")
        assert http.delete(f"/api/kernels/{kid}").status_code == 204


def test_a_runtime_dir_too_long_for_ipc_is_refused_at_start(services: Services) -> None:
    long_dir = Path(tempfile.gettempdir()) / ("d" * 80)
    env = {
        "KERNELBUS_WORKER_KERNEL_TRANSPORT": "ipc",
        "KERNELBUS_WORKER_RUNTIME_DIR": str(long_dir),
    }
    try:
        worker = services.spawn("kernelbus-worker", env)
        assert worker.process.wait(60) != 0
        assert "too long for ipc" in worker.log()
    finally:
        shutil.rmtree(long_dir, ignore_errors=True)


def _adopted(log: str, kernel_id: str) -> bool:
    """True once `kernel_id` was re-adopted; fails at once (with the log) if it could not be."""
    assert f"could not re-adopt kernel {kernel_id}" not in log, log
    return any("re-adopted kernel" in line and kernel_id in line for line in log.splitlines())


def _connection_file_of(pid: int) -> Path:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return Path(args[args.index("-f") + 1])
