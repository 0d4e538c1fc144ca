"""The worker's side of the iopub keeper (`kernelbus_worker.keeper`, ADR 0014): start it
detached if none answers in the runtime dir, tell it which kernels to watch and what was
delivered, and fetch what a crashed predecessor did not deliver."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kernelbus.memory import DEFAULT_KEEP_BYTES
from kernelbus_worker.keeper import MODULE, SOCKET_NAME, read_message, write_message

log = logging.getLogger(__name__)

SUN_PATH_MAX = 100

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class KeeperUnavailable(Exception):
    pass


class KeeperClient:
    def __init__(
        self,
        runtime_dir: Path,
        window: float,
        worker_id: str,
        start_timeout: float = 10.0,
        malloc_keep_bytes: int = DEFAULT_KEEP_BYTES,
    ) -> None:
        self.runtime_dir = runtime_dir
        self.window = window
        self.malloc_keep_bytes = malloc_keep_bytes
        self.worker_id = worker_id
        self.start_timeout = start_timeout
        self._dir_fd: int | None = None
        self._stream: Stream | None = None
        self._lock = asyncio.Lock()
        self._spawned: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self.connections = 0
        """Connections made so far (a new one may be to a new keeper that knows nothing)."""

    @property
    def socket_path(self) -> str:
        """The keeper's socket; through /proc/self/fd when the runtime dir's path is too long
        for a Unix socket address."""
        path = str(self.runtime_dir / SOCKET_NAME)
        if len(path) <= SUN_PATH_MAX:
            return path
        if self._dir_fd is None:
            self._dir_fd = os.open(self.runtime_dir, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._dir_fd}/{SOCKET_NAME}"

    async def _connect(self, spawn: bool = True) -> Stream:
        if self._stream is not None:
            return self._stream
        try:
            self._stream = await asyncio.open_unix_connection(self.socket_path)
            self.connections += 1
            return self._stream
        except OSError as exc:
            if not spawn:
                raise KeeperUnavailable(f"no iopub keeper answers: {exc}") from exc
        self._spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while True:
            try:
                self._stream = await asyncio.open_unix_connection(self.socket_path)
                self.connections += 1
                return self._stream
            except OSError as exc:
                if loop.time() > deadline:
                    raise KeeperUnavailable(f"no iopub keeper answers: {exc}") from exc
                await asyncio.sleep(0.05)

    def _spawn(self) -> None:
        """Start a keeper in a session of its own (it outlives this worker, as kernels do)."""
        if self._spawned is not None and self._spawned.poll() is None:
            return
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        command = [
            sys.executable,
            "-m",
            MODULE,
            str(self.runtime_dir),
            "--window",
            str(self.window),
            "--malloc-keep-bytes",
            str(self.malloc_keep_bytes),
        ]
        with open(self.runtime_dir / "iopub-keeper.log", "ab") as out:
            self._spawned = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        log.info(
            "started the iopub keeper (pid %d) for %s",
            self._spawned.pid,
            self.runtime_dir,
            extra={"worker_id": self.worker_id},
        )

    async def request(self, message: dict[str, Any], spawn: bool = True) -> dict[str, Any]:
        """Send `message`, starting a keeper first if none answers (unless not `spawn`)."""
        async with self._lock:
            if self._stopped:
                raise KeeperUnavailable("the keeper was stopped (this worker is stopping)")
            for attempt in (1, 2):
                try:
                    reader, writer = await self._connect(spawn)
                    await write_message(writer, message)
                    reply = await read_message(reader)
                    if reply is None:
                        raise ConnectionError("the keeper closed the connection")
                    return reply
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    self._drop()
                    if attempt == 2:
                        raise KeeperUnavailable(str(exc)) from exc
            raise AssertionError("unreachable")

    async def sync(self, kernels: dict[str, dict[str, Any]]) -> None:
        await self.request({"op": "sync", "kernels": kernels})
        if self._spawned is not None:
            self._spawned.poll()  # reap it if it stopped itself meanwhile

    async def forget(self, kernel_id: str) -> None:
        await self.request({"op": "forget", "kernel_id": kernel_id})

    async def fetch(self, kernel_id: str) -> list[list[bytes]]:
        reply = await self.request({"op": "fetch", "kernel_id": kernel_id})
        return [[base64.b64decode(p) for p in parts] for parts in reply.get("frames", [])]

    async def stop(self) -> None:
        """Stop the running keeper, if any (none is started for that)."""
        try:
            await self.request({"op": "stop"}, spawn=False)
        except KeeperUnavailable:
            pass  # none runs: nothing to stop
        finally:
            self._stopped = True  # no request from now on starts a new one
            self.close()
        if self._spawned is not None:
            await asyncio.to_thread(_wait, self._spawned, 5.0)

    def _drop(self) -> None:
        if self._stream is not None:
            self._stream[1].close()
            self._stream = None

    def close(self) -> None:
        self._drop()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


def _wait(process: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
