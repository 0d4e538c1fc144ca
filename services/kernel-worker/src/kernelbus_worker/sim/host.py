"""`python -m kernelbus_worker.sim.host`: one process hosting many simulated Jupyter kernels.

For tests and benchmarks only (docs/decisions/0013-scale.md): each simulated kernel
binds the five Jupyter sockets (shell, control, stdin ROUTERs, iopub PUB, heartbeat REP) on
ipc:// paths, signs its messages with its connection key, and answers kernel_info, execute
(integer arithmetic is evaluated, any other code is echoed on stdout), is_complete,
comm_info, interrupt and shutdown, with busy/idle status on iopub. A Python process costs
~20 MB; a simulated kernel costs a few tens of KB here, which is what lets one 2-core box run
10,000 kernels.

The host talks to its provisioner (`kernelbus_worker.sim.provisioner`) in JSON lines:
stdin carries `{"op": "start"|"kill"|"signal", "kernel_id": ..., ...}`, stdout carries
`{"ready": ..., "dir": ...}` once, then `{"exited": kernel_id, "code": n}` per ended kernel and
`{"started": kernel_id}` / `{"failed": kernel_id, "error": ...}` per start. The host ends
(and with it its kernels) when stdin closes: its worker is gone.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import operator
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.session import Session

_BINARY: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_LANGUAGE = {
    "name": "sim",
    "version": "1",
    "mimetype": "text/plain",
    "file_extension": ".txt",
}


def evaluate(code: str) -> int | None:
    """The value of integer arithmetic (+ - * // % and parentheses), else None."""
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except SyntaxError:
        return None
    try:
        return _eval(tree.body)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _eval(node: ast.expr) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if abs(left) > 10**100 or abs(right) > 10**100:
            raise ValueError("too large")
        return _BINARY[type(node.op)](left, right)
    raise ValueError("not integer arithmetic")


class SimKernel:
    def __init__(self, host: Host, kernel_id: str, info: dict[str, Any]) -> None:
        self.host = host
        self.kernel_id = kernel_id
        self.session = Session(
            key=str(info["key"]).encode(),
            signature_scheme=str(info.get("signature_scheme", "hmac-sha256")),
            username="kernel",
        )
        self.count = 0
        ctx = host.context
        base = f"ipc://{info['ip']}-"
        kinds = {
            "shell": zmq.ROUTER,
            "control": zmq.ROUTER,
            "stdin": zmq.ROUTER,
            "iopub": zmq.PUB,
            "hb": zmq.REP,
        }
        self.sockets: dict[str, zmq.asyncio.Socket] = {}
        try:
            for channel, kind in kinds.items():
                sock = ctx.socket(kind)
                sock.linger = 0
                sock.bind(base + str(info[f"{channel}_port"]))
                self.sockets[channel] = sock
        except Exception:
            self.close()
            raise
        self.tasks = [
            asyncio.create_task(self._serve("shell")),
            asyncio.create_task(self._serve("control")),
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._drain("stdin")),
        ]

    def close(self) -> None:
        for task in getattr(self, "tasks", []):
            task.cancel()
        for sock in self.sockets.values():
            sock.close(linger=0)
        self.sockets.clear()

    async def _heartbeat(self) -> None:
        sock = self.sockets["hb"]
        while True:
            await sock.send_multipart(await sock.recv_multipart())

    async def _drain(self, channel: str) -> None:
        sock = self.sockets[channel]
        while True:
            await sock.recv_multipart()

    async def _serve(self, channel: str) -> None:
        sock = self.sockets[channel]
        while True:
            frames = await sock.recv_multipart()
            try:
                idents, parts = self.session.feed_identities(frames, copy=True)
                request = self.session.deserialize(parts, content=True, copy=True)
            except Exception as exc:  # bad signature or shape: a real kernel drops it too
                print(f"sim kernel {self.kernel_id}: dropped a message: {exc}", file=sys.stderr)
                continue
            await self._handle(channel, idents, request)

    async def _send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        parent: dict[str, Any],
        idents: list[bytes] | None = None,
    ) -> None:
        msg = self.session.msg(msg_type, content, parent=parent)
        frames = self.session.serialize(msg, ident=idents)
        await self.sockets[channel].send_multipart(frames)

    async def _status(self, state: str, parent: dict[str, Any]) -> None:
        await self._send("iopub", "status", {"execution_state": state}, parent)

    async def _handle(self, channel: str, idents: list[bytes], request: dict[str, Any]) -> None:
        msg_type = str(request["header"].get("msg_type", ""))
        content: dict[str, Any] = request.get("content") or {}
        await self._status("busy", request)
        reply: dict[str, Any] | None
        ending = False
        if msg_type == "kernel_info_request":
            reply = {
                "status": "ok",
                "protocol_version": "5.3",
                "implementation": "kernelbus-sim",
                "implementation_version": "0.1",
                "language_info": _LANGUAGE,
                "banner": "Kernelbus simulated kernel (tests and benchmarks only)",
                "help_links": [],
            }
        elif msg_type == "execute_request":
            reply = await self._execute(request, content)
        elif msg_type == "is_complete_request":
            reply = {"status": "complete"}
        elif msg_type == "comm_info_request":
            reply = {"status": "ok", "comms": {}}
        elif msg_type == "interrupt_request":
            reply = {"status": "ok"}
        elif msg_type == "shutdown_request":
            reply = {"status": "ok", "restart": bool(content.get("restart", False))}
            ending = True
        else:
            reply = None
        if reply is not None:
            reply_type = msg_type.replace("_request", "_reply")
            await self._send(channel, reply_type, reply, request, idents)
        await self._status("idle", request)
        if ending:
            self.host.exit(self.kernel_id, 0)

    async def _execute(self, request: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
        code = str(content.get("code", ""))
        silent = bool(content.get("silent", False))
        if not silent and content.get("store_history", True):
            self.count += 1
        if not silent:
            await self._send(
                "iopub", "execute_input", {"code": code, "execution_count": self.count}, request
            )
            value = evaluate(code)
            if value is not None:
                data = {"data": {"text/plain": str(value)}, "metadata": {}}
                await self._send(
                    "iopub", "execute_result", {**data, "execution_count": self.count}, request
                )
            elif code.strip():
                await self._send("iopub", "stream", {"name": "stdout", "text": code}, request)
        return {
            "status": "ok",
            "execution_count": self.count,
            "user_expressions": {},
            "payload": [],
        }


class Host:
    def __init__(self) -> None:
        self.context = zmq.asyncio.Context()
        self.context.set(zmq.MAX_SOCKETS, 1_000_000)
        self.kernels: dict[str, SimKernel] = {}
        self.dir = tempfile.mkdtemp(prefix="kbsim")

    def say(self, message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    def start(self, kernel_id: str, info: dict[str, Any]) -> None:
        try:
            self.kernels[kernel_id] = SimKernel(self, kernel_id, info)
        except Exception as exc:
            self.say({"failed": kernel_id, "error": str(exc)})
            return
        self.say({"started": kernel_id})

    def exit(self, kernel_id: str, code: int) -> None:
        kernel = self.kernels.pop(kernel_id, None)
        if kernel is not None:
            kernel.close()
            self.say({"exited": kernel_id, "code": code})

    def handle(self, command: dict[str, Any]) -> None:
        op, kernel_id = command.get("op"), str(command.get("kernel_id", ""))
        if op == "start":
            self.start(kernel_id, dict(command["info"]))
        elif op == "kill":
            self.exit(kernel_id, -signal.SIGKILL)
        elif op == "signal":
            signum = int(command.get("signum", 0))
            if signum in (signal.SIGKILL, signal.SIGTERM):
                self.exit(kernel_id, -signum)
            # SIGINT and signal 0: nothing runs long enough to interrupt; the kernel lives.

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self.say({"ready": True, "dir": self.dir, "pid": os.getpid()})
        try:
            while line := await reader.readline():
                try:
                    command = json.loads(line)
                except ValueError:
                    continue
                self.handle(command)
        finally:
            for kernel_id in list(self.kernels):
                self.exit(kernel_id, -signal.SIGKILL)
            self.context.term()
            shutil.rmtree(self.dir, ignore_errors=True)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when the host ends
    with contextlib.suppress(BrokenPipeError):
        asyncio.run(Host().run())


if __name__ == "__main__":
    main()
