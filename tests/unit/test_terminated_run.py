"""A test run stopped with SIGTERM (a CI timeout, `kill`) still stops the processes its tests
started: the suite's plugin turns the signal into an interrupt, so teardown runs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytest_plugins = ["pytester"]

STARTS_A_PROCESS = """
import subprocess, sys, time
from pathlib import Path

def test_starts_a_service():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                             start_new_session=True)
    Path("child.pid").write_text(str(child.pid))
    time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_terminated_run_stops_what_its_tests_started(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_service=STARTS_A_PROCESS)
    args = ["-p", "kernelbus.testing.plugin", "-p", "no:cacheprovider", "-p", "no:randomly"]
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args, "-q"],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    pid_file = Path(pytester.path) / "child.pid"
    child = None
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert run.poll() is None and time.monotonic() < deadline, "the test did not start"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert not _gone(child)
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=60)
        assert _gone(child), out.decode()
        assert run.returncode != 0  # an interrupted run is not a passed one
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if child is not None and not _gone(child):
            psutil.Process(child).kill()
