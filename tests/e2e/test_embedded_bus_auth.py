"""The bus of `kernelbus run` as a local user meets it: an anonymous NATS client is refused,
and the example events consumer, logged in with the read-only credential the launcher
prints, follows a kernel start."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest

from kernelbus.natsserver import free_port
from kernelbus.processes import ServiceProcess, wait_for
from kernelbus.testing.reaper import descendants, kill_tree

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "subscribe_events.py"


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[tuple[ServiceProcess, str, str]]:
    port = free_port()
    token = "bus-auth-token"
    env = {
        "KERNELBUS_PORT": str(port),
        "KERNELBUS_AUTH_TOKEN": token,
        "KERNELBUS_DATA_DIR": str(tmp_path / "data"),
        "KERNELBUS_EVENTS_PORT": str(free_port()),
        "KERNELBUS_WORKER_POOL": "",
    }
    out = tmp_path / "out.txt"
    with open(out, "wb") as handle:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "kernelbus"), "run"],
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = ServiceProcess("kernelbus run", process, out)
    try:
        wait_for(lambda: "Press Ctrl-C" in started.log(), 90, "the launcher banner", started)
        yield started, f"http://127.0.0.1:{port}", token
    finally:
        left = descendants(process.pid)
        started.stop(timeout=60)
        kill_tree(left)


def bus_banner(text: str) -> tuple[str, dict[str, str]]:
    """The NATS URL and the events consumer's login, as `kernelbus run` prints them."""
    url = re.search(r"nats:\s+(\S+)", text)
    login = re.search(r"NATS_USER=(\S+) NATS_PASSWORD=(\S+)", text)
    assert url and login, text
    return url.group(1), {"NATS_USER": login.group(1), "NATS_PASSWORD": login.group(2)}


async def anonymous_refusal(url: str) -> str:
    try:
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1)
    except (nats.errors.Error, OSError) as exc:
        return str(exc).lower()
    await nc.close()
    return "accepted"


def test_the_bus_refuses_anonymous_clients_and_serves_the_events_consumer(
    launcher: tuple[ServiceProcess, str, str], tmp_path: Path
) -> None:
    started, url, token = launcher
    nats_url, consumer = bus_banner(started.log())
    assert "authorization" in asyncio.run(anonymous_refusal(nats_url))
    log = tmp_path / "follower.txt"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE)],
            env={**os.environ, "NATS_URL": nats_url, **consumer},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    follower = ServiceProcess("follower", process, log)
    try:
        wait_for(lambda: "following kb.events.>" in follower.log(), 60, "the example", follower)
        headers = {"Authorization": f"token {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            created = client.post("/api/kernels", json={"name": "python3"})
            assert created.status_code == 201, created.text
            kid = created.json()["id"]
            wait_for(lambda: kid in follower.log(), 60, "the start event", follower)
            assert "kernel_actions" in follower.log()
            assert client.delete(f"/api/kernels/{kid}").status_code == 204
    finally:
        follower.stop()
