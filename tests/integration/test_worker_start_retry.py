"""A kernel process that exits during start is started once more with fresh ports (another
process on the host can take a port jupyter_client picked before the kernel binds it); a
kernel that cannot start fails with a clear error after its second try, leaving nothing."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from kernelbus import bus, subjects
from kernelbus.errors import LaunchFailed
from kernelbus.messages import ShutdownKernel, StartKernel
from kernelbus.testing.busclient import BusConnection
from kernelbus.testing.plugin import Services

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


def install_flaky_kernelspec(root: Path, name: str, exits: int) -> Path:
    """A kernelspec whose process exits at once its first `exits` times, then is ipykernel.
    Returns the directory that counts the exits."""
    counter = root / f"{name}-exits"
    counter.mkdir()
    script = (
        f'n=$(ls "{counter}" | wc -l); '
        f'if [ "$n" -lt {exits} ]; then touch "{counter}/$n"; exit 3; fi; '
        f'exec "{sys.executable}" -m ipykernel_launcher -f "$0"'
    )
    spec_dir = root / "data" / "kernels" / name
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": ["/bin/sh", "-c", script, "{connection_file}"],
                "display_name": name,
                "language": "python",
            }
        )
    )
    return counter


async def test_a_kernel_that_exits_during_start_is_started_once_more(
    services: Services, nc: Client, tmp_path: Path
) -> None:
    wid = f"w-{uuid.uuid4().hex[:8]}"
    counter = install_flaky_kernelspec(tmp_path, "flaky", exits=1)
    services.worker({"KERNELBUS_WORKER_ID": wid, "JUPYTER_PATH": str(tmp_path / "data")})
    command = StartKernel(kernel_id=str(uuid.uuid4()), kernel_name="flaky")
    reply = await bus.request(nc, subjects.worker_start(wid), command, timeout=90)
    assert reply.kernel is not None, reply
    assert len(list(counter.iterdir())) == 1  # it did exit once
    conn = BusConnection(nc, reply.kernel.id)
    await conn.attach()
    seen = await conn.execute("print(6 * 7)")
    assert any(m.msg_type == "stream" and m.content["text"] == "42\n" for m in seen)
    await bus.request(
        nc,
        subjects.kernel_command(reply.kernel.id),
        ShutdownKernel(kernel_id=command.kernel_id),
        30,
    )


async def test_a_kernel_that_cannot_start_fails_after_its_second_try(
    services: Services, nc: Client, tmp_path: Path
) -> None:
    wid = f"w-{uuid.uuid4().hex[:8]}"
    counter = install_flaky_kernelspec(tmp_path, "broken", exits=1000)
    services.worker({"KERNELBUS_WORKER_ID": wid, "JUPYTER_PATH": str(tmp_path / "data")})
    command = StartKernel(kernel_id=str(uuid.uuid4()), kernel_name="broken")
    with pytest.raises(LaunchFailed, match="failed to start: kernel process exited during start"):
        await bus.request(nc, subjects.worker_start(wid), command, timeout=90)
    assert len(list(counter.iterdir())) == 2
