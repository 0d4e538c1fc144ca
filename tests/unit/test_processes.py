"""`kernelbus.processes`: which command lines are kernels and keepers of a runtime dir, and
the process facts psutil reads (on processes this test starts and stops by their pid), and the
worker's `AdoptedProcess` handle on a kernel it did not spawn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelbus.processes import (
    is_keeper_of,
    is_kernel_under,
    kernel_id_of,
    kernels_under,
    parent_pid,
    pid_running,
    pid_stopped,
    wait_for,
)
from kernelbus_worker.adoption import AdoptedProcess

RUNTIME = Path("/tmp/kb-runtime-abc")
KERNEL = f"python -m ipykernel_launcher -f {RUNTIME}/kernel-1234-ab.json"
KEEPER = f"python -m kernelbus_worker.keeper {RUNTIME}"


def test_a_kernel_is_recognised_by_its_connection_file_in_the_runtime_dir() -> None:
    assert is_kernel_under(KERNEL, RUNTIME)
    assert not is_kernel_under(KERNEL, Path("/tmp/kb-runtime-other"))
    assert not is_kernel_under(f"python -m ipykernel_launcher -f {RUNTIME}/x.json", RUNTIME)
    assert not is_kernel_under(KEEPER + " kernel-1", RUNTIME)  # the keeper is no kernel


def test_a_keeper_is_recognised_by_its_module_and_runtime_dir() -> None:
    assert is_keeper_of(KEEPER, RUNTIME)
    assert not is_keeper_of(KEEPER, Path("/tmp/kb-runtime-other"))
    assert not is_keeper_of(KERNEL, RUNTIME)


def test_the_kernel_id_is_read_from_the_connection_file_name() -> None:
    assert kernel_id_of(KERNEL) == "1234-ab"
    assert kernel_id_of(KEEPER) is None
    assert kernel_id_of("") is None


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child whose command line names a kernel connection file in `tmp_path`."""
    marker = tmp_path / "kernel-sleeper.json"
    code = "import time; time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", code, "-f", str(marker)])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def test_process_facts_of_a_running_stopped_and_reaped_child(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    pid = sleeper.pid
    assert pid_running(pid) and not pid_stopped(pid)
    assert parent_pid(pid) == os.getpid()
    wait_for(lambda: pid in kernels_under(tmp_path), 10, "the child's command line")
    sleeper.send_signal(signal.SIGSTOP)
    wait_for(lambda: pid_stopped(pid), 10, "the child to stop")
    sleeper.send_signal(signal.SIGCONT)
    sleeper.kill()
    wait_for(lambda: not pid_running(pid), 10, "the killed child to be a zombie")  # not reaped
    sleeper.wait()
    assert not pid_running(pid) and parent_pid(pid) is None and not pid_stopped(pid)


def test_an_adopted_process_answers_like_popen_and_ignores_signals_once_gone(
    sleeper: subprocess.Popen[bytes],
) -> None:
    adopted = AdoptedProcess(sleeper.pid)
    assert adopted.poll() is None and adopted.stdout is None
    adopted.terminate()
    sleeper.wait()
    assert adopted.poll() == -1 and adopted.wait() == -1
    adopted.kill()  # gone: nothing to signal, no error
    adopted.send_signal(signal.SIGINT)
