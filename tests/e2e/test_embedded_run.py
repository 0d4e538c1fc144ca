"""`kernelbus run` (what `make run` starts) as a user runs it: one command, a working gateway,
and nothing left behind after Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kernelbus.natsserver import free_port
from kernelbus.processes import pid_running, wait_for
from kernelbus.testing.reaper import command_line, descendants, kill_tree

pytestmark = pytest.mark.e2e


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, str, Path]]:
    port = free_port()
    token = "embedded-token"
    env = {
        **os.environ,
        "KERNELBUS_PORT": str(port),
        "KERNELBUS_AUTH_TOKEN": token,
        "KERNELBUS_DATA_DIR": str(tmp_path / "data"),
        "KERNELBUS_EVENTS_PORT": str(free_port()),
    }
    launcher = Path(sys.executable).parent / "kernelbus"
    out = tmp_path / "out.txt"
    with open(out, "w") as handle:
        process = subprocess.Popen(
            [str(launcher), "run"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a process group of its own, as in a terminal
        )
    try:
        yield process, f"http://127.0.0.1:{port}", token, out
    finally:
        # Whatever the test did: the launcher, NATS (a session of its own), every service and
        # kernel go, by pid, even if the launcher is wedged or already gone.
        left = descendants(process.pid)
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_tree(left)


def test_run_serves_a_gateway_and_ctrl_c_leaves_nothing(
    embedded: tuple[subprocess.Popen[str], str, str, Path], tmp_path: Path
) -> None:
    process, url, token, out = embedded

    def banner() -> bool:
        if process.poll() is not None:
            pytest.fail(f"kernelbus run exited early:\n{out.read_text()}")
        return "Kernelbus is running" in out.read_text()

    wait_for(banner, 90, "the launcher banner")
    assert token in out.read_text()
    headers = {"Authorization": f"token {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        assert client.get("/api/kernels", headers={"Authorization": ""}).status_code == 401
        # Exactly what the README shows: curl -d sends a form content type with a JSON body.
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        created = client.post("/api/kernels", content=b'{"name":"python3"}', headers=form)
        assert created.status_code == 201, created.text
        kernel = created.json()
        assert client.get(f"/api/kernels/{kernel['id']}").json()["id"] == kernel["id"]
    started = descendants(process.pid)
    workers = [p for p in started if "kernelbus-worker" in command_line(p)]
    apis = [p for p in started if "kernelbus-api" in command_line(p)]
    assert len(workers) == 1 and len(apis) == 1
    # The started kernel (handed out from the warm pool) and, once the pool has refilled, a
    # fresh warm one: every kernel runs under the worker, none under the api.
    kernels = [p for p in started if "ipykernel" in command_line(p)]
    assert 1 <= len(kernels) <= 2, [command_line(p) for p in kernels]
    assert set(kernels) <= descendants(workers[0])
    assert not set(kernels) & descendants(apis[0])
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
    assert process.wait(60) == 0
    worker_log = next((tmp_path / "data" / "logs").glob("kernelbus-worker-*.log")).read_text()
    assert "kernel shut down (worker stopping)" in worker_log  # gracefully, NATS still up
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_running(p) for p in started):
        time.sleep(0.1)
    assert not [command_line(p) for p in started if pid_running(p)]
