"""deploy/compose.yaml for real: built offline and brought up by scripts/compose-env.sh on a
local Docker engine, then driven from the host as an operator and a client would: REST,
websocket execute, a scale-out with a burst of starts, a worker process crash (kernels kept),
a worker container crash (kernels dead, clients told), a NATS outage, events, and a clean stop.

The tests share one stack and run in file order. Where no Docker engine can run (not root,
no dockerd, no apt), the module is skipped with the script's reason. Everything the module
started is removed with `docker compose down -v`, also when a test failed; a dockerd the
script started for this module is stopped again (one that was already running is left alone).
Timings are printed (`-s`) and recorded in bench/RESULTS.md, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from kernelbus.natsserver import free_port
from kernelbus.testing.sockets import CannotInspect, nodelay_of_accepted

# Steps of one scenario over one stack (built once: minutes): a late step stops it, and the
# cluster variant runs after that. Kept in file order when the suite is shuffled.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(3600), pytest.mark.scenario]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compose-env.sh"
NO_ENGINE = 3  # compose-env.sh: no Docker engine can run here
API_CONTAINER_PORT = 8888  # deploy/compose.yaml: KERNELBUS_PORT of the api service


@dataclass
class Stack:
    project: str
    env_file: Path
    api: str
    events: str
    token: str
    overlays: list[Path] = field(default_factory=list)
    """Compose files on top of compose.yaml (added by a test, kept for the later ones)."""

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        command = ["docker", "compose", "-f", str(ROOT / "deploy" / "compose.yaml")]
        for overlay in self.overlays:
            command += ["-f", str(overlay)]
        command += ["--env-file", str(self.env_file), "-p", self.project, *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).split()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    @property
    def ws(self) -> str:
        return self.api.replace("http://", "ws://", 1)


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def inspect(container: str, template: str) -> str:
    return docker("inspect", "-f", template, container)


def until(condition: Any, timeout: float, what: str) -> float:
    """Poll until `condition()` is truthy; the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("compose")
    token = secrets.token_urlsafe(24)
    api_port, events_port = free_port(), free_port()
    env = {
        "KERNELBUS_AUTH_TOKEN": token,
        **{
            # Shapes nats-server would parse as config text if the image's entry point did
            # not quote them (a malformed date, a float, a negative number; ADR 0033).
            f"KERNELBUS_NATS_{user}_PASSWORD": prefix + secrets.token_urlsafe(24)
            for user, prefix in (("API", "12-"), ("WORKER", "3.x"), ("CULLER", "-"), ("EVENTS", ""))
        },
        "KERNELBUS_API_HOST_PORT": str(api_port),
        "KERNELBUS_EVENTS_HOST_PORT": str(events_port),
        "KERNELBUS_WORKER_POOL": "python3=1",
        "KERNELBUS_LOG_FORMAT": "text",
    }
    env_file = root / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    project = f"kbe2e-{uuid.uuid4().hex[:8]}"
    stack = Stack(
        project,
        env_file,
        f"http://127.0.0.1:{api_port}",
        f"http://127.0.0.1:{events_port}",
        token,
    )
    run_env = _script_env(project, env_file)
    started_engine = None
    try:
        began = time.monotonic()
        done = subprocess.run(
            ["bash", str(SCRIPT), "up"], env=run_env, capture_output=True, text=True, timeout=2400
        )
        print(f"\ncompose-env.sh up: {time.monotonic() - began:.1f} s\n{done.stderr}")
        started = re.search(r"^compose-env: started dockerd pid (\d+)", done.stderr, re.M)
        started_engine = int(started.group(1)) if started else None
        if done.returncode == NO_ENGINE:
            pytest.skip(done.stderr.strip().splitlines()[-1])
        assert done.returncode == 0, f"compose-env.sh up failed:\n{done.stdout}\n{done.stderr}"
        yield stack
    finally:
        if started_engine is not None or _engine_answers():
            began = time.monotonic()
            stack.compose("down", "-v", "--timeout", "10", check=False)
            print(f"docker compose down -v: {time.monotonic() - began:.1f} s")
        if started_engine is not None:
            _stop_engine(started_engine)


def _script_env(project: str, env_file: Path) -> dict[str, str]:
    return {**os.environ, "COMPOSE_PROJECT_NAME": project, "KERNELBUS_ENV_FILE": str(env_file)}


def _engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _stop_engine(pid: int) -> None:
    """SIGTERM the dockerd compose-env.sh started for this module, by pid; wait for it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(AssertionError):
            until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 30, "dockerd")
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# --- a minimal Jupyter websocket client -----------------------------------------------------


def _message(msg_type: str, content: dict[str, Any], session: str) -> dict[str, Any]:
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "session": session,
        "username": "e2e",
        "version": "5.3",
        "date": "",
    }
    return {
        "header": header,
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": "shell",
    }


class Client:
    def __init__(self, ws: websockets.ClientConnection, session: str) -> None:
        self.ws = ws
        self.session = session
        self.seen: list[dict[str, Any]] = []

    async def execute(self, code: str, timeout: float = 60) -> str:
        """Run `code`; its stdout once the kernel is idle again."""
        msg = _message("execute_request", {"code": code, "silent": False}, self.session)
        await self.ws.send(json.dumps(msg))
        out, replied, idle = "", False, False
        async with asyncio.timeout(timeout):
            while not (replied and idle):
                reply = await self.recv()
                if reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                    continue
                kind = reply["msg_type"]
                if kind == "stream":
                    out += reply["content"]["text"]
                elif kind == "execute_reply":
                    assert reply["content"]["status"] == "ok", reply["content"]
                    replied = True
                elif kind == "status" and reply["content"]["execution_state"] == "idle":
                    idle = True
        return out

    async def recv(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await self.ws.recv())
        self.seen.append(message)
        return message


@contextlib.asynccontextmanager
async def connect(stack: Stack, kernel_id: str, session: str | None = None) -> Any:
    session = session or uuid.uuid4().hex
    url = f"{stack.ws}/api/kernels/{kernel_id}/channels?session_id={session}"
    async with websockets.connect(url, additional_headers=stack.headers) as ws:
        yield Client(ws, session)


async def run(stack: Stack, kernel_id: str, code: str) -> str:
    async with connect(stack, kernel_id) as client:
        out: str = await client.execute(code)
        return out


def rest(stack: Stack, method: str, path: str, auth: bool = True) -> httpx.Response:
    """One request to the api (blocking: these tests run one thing at a time)."""
    headers = stack.headers if auth else {}
    return httpx.request(method, f"{stack.api}{path}", headers=headers, timeout=30)


def start_kernel(stack: Stack) -> str:
    created = httpx.post(f"{stack.api}/api/kernels", json={}, headers=stack.headers, timeout=120)
    assert created.status_code == 201, created.text
    kernel_id: str = created.json()["id"]
    return kernel_id


def kernel_state(stack: Stack, kernel_id: str) -> str:
    got = rest(stack, "GET", f"/api/kernels/{kernel_id}")
    assert got.status_code == 200, got.text
    state: str = got.json()["execution_state"]
    return state


HOSTNAME = "import socket; print(socket.gethostname())"
Placed = dict[str, str]  # kernel_id -> hostname of its worker container (= container id prefix)


def container_of(stack: Stack, hostname: str) -> str:
    found = [c for c in stack.containers("kernel-worker") if c.startswith(hostname)]
    assert len(found) == 1, f"no single worker container for host {hostname}"
    return found[0]


# --- the tests, in order --------------------------------------------------------------------


async def test_rest_and_websocket_execute(stack: Stack) -> None:
    assert rest(stack, "GET", "/api/kernels", auth=False).status_code in (401, 403)
    specs = rest(stack, "GET", "/api/kernelspecs")
    assert specs.status_code == 200 and "python3" in specs.json()["kernelspecs"]
    kernel_id = start_kernel(stack)
    async with connect(stack, kernel_id) as client:
        await client.execute("x = 6 * 7")
        assert (await client.execute("print(x)")).strip() == "42"
    assert rest(stack, "DELETE", f"/api/kernels/{kernel_id}").status_code == 204


async def test_the_compose_api_sets_tcp_nodelay_on_its_websocket_sockets(stack: Stack) -> None:
    """The image's api (uvicorn as the image runs it), its accepted sockets read from the
    container's process itself (PROTOCOLS §2.6; tests/integration/test_api_socket_nodelay.py
    does the same for a local api)."""
    [api] = stack.containers("api")
    pid = int(inspect(api, "{{.State.Pid}}"))
    kernel_id = start_kernel(stack)
    try:
        async with connect(stack, kernel_id) as client:
            await client.execute("1 + 1")
            try:
                accepted = nodelay_of_accepted(pid, API_CONTAINER_PORT)
            except CannotInspect as exc:
                pytest.skip(str(exc))
    finally:
        rest(stack, "DELETE", f"/api/kernels/{kernel_id}")
    # Through Docker's port forwarding the peer is its proxy or the bridge: every connection
    # the api holds while our websocket is open, ours among them.
    assert accepted, "the api container holds no established connection on its port"
    assert all(accepted.values()), f"sockets without TCP_NODELAY (peer port: set): {accepted}"


@pytest.fixture(scope="module")
def placed(stack: Stack) -> Placed:
    """Three workers, then six back-to-back starts; where each kernel runs."""
    began = time.monotonic()
    stack.compose("up", "-d", "--wait", "--no-build", "--scale", "kernel-worker=3")
    workers = stack.containers("kernel-worker")
    assert len(workers) == 3
    for container in workers:
        until(lambda c=container: "kernel-worker ready" in _logs(c), 120, f"worker {container}")
    print(f"scale to 3 workers: {time.monotonic() - began:.1f} s")
    kernels = [start_kernel(stack) for _ in range(6)]

    async def hosts() -> list[str]:
        return [(await run(stack, k, HOSTNAME)).strip() for k in kernels]

    return dict(zip(kernels, asyncio.run(hosts()), strict=True))


def _logs(container: str) -> str:
    done = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
    return done.stdout + done.stderr


def test_a_burst_of_starts_spreads_over_three_workers(stack: Stack, placed: Placed) -> None:
    per_worker = Counter(placed.values())
    print(f"placement of six starts: {sorted(per_worker.values(), reverse=True)}")
    assert len(per_worker) == 3, f"six starts landed on {dict(per_worker)}"
    assert max(per_worker.values()) <= 3, dict(per_worker)
    for hostname in per_worker:
        container_of(stack, hostname)


async def test_a_worker_process_crash_keeps_its_containers_kernels(
    stack: Stack, placed: Placed
) -> None:
    kernel_id, hostname = next(iter(placed.items()))
    container = container_of(stack, hostname)
    await run(stack, kernel_id, "kept = 'still here'")
    find_worker = (
        "import pathlib\n"
        "for p in pathlib.Path('/proc').iterdir():\n"
        "    if p.name.isdigit() and p.name != '1':\n"
        "        line = (p / 'cmdline').read_bytes().split(b'\\0')\n"
        "        if any(a.endswith(b'/kernelbus-worker') for a in line): print(p.name)\n"
    )
    pids = docker("exec", container, "python", "-c", find_worker).split()
    assert len(pids) == 1, f"worker processes in {container}: {pids}"
    restarts_before = inspect(container, "{{.RestartCount}}")
    kill = f"import os, signal; os.kill({int(pids[0])}, signal.SIGKILL)"
    docker("exec", container, "python", "-c", kill)
    took = until(lambda: _logs(container).count("kernel-worker ready") >= 2, 120, "the restart")
    print(f"worker process restarted inside its container: {took:.1f} s")
    assert "restarting in" in _logs(container)
    assert inspect(container, "{{.RestartCount}}") == restarts_before, "the container survived"
    assert (await run(stack, kernel_id, "print(kept)")).strip() == "still here"


async def test_a_worker_container_crash_marks_its_kernels_dead_and_tells_clients(
    stack: Stack, placed: Placed
) -> None:
    # A kernel on another worker than the one of the previous test.
    first_host = next(iter(placed.values()))
    kernel_id, hostname = next((k, h) for k, h in placed.items() if h != first_host)
    container = container_of(stack, hostname)
    async with connect(stack, kernel_id) as client:
        await client.execute("1")
        docker("kill", container)  # SIGKILL of the whole container: its kernels die with it
        killed = time.monotonic()
        states: list[str] = []
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(60):
                while True:
                    message = await client.recv()
                    if message["msg_type"] == "status":
                        states.append(message["content"]["execution_state"])
        told = time.monotonic() - killed
        print(f"client told 'dead' and closed {told:.1f} s after docker kill: {states}")
        assert "dead" in states
        assert client.ws.close_code is not None
    until(lambda: kernel_state(stack, kernel_id) == "dead", 60, "the kernel dead")
    print(f"kernel dead in the registry {time.monotonic() - killed:.1f} s after the kill")
    # Found by the culler's liveness probe (no connection of the container left for the
    # grace), not by the heartbeat's expiry (10 s TTL): ADR 0016.
    (culler,) = stack.containers("culler")
    lost = [line for line in _logs(culler).splitlines() if "lost (" in line]
    assert lost and "no connection left for 4 s" in lost[-1], lost
    # Docker's rule for every restart policy: `docker kill` is the operator's decision.
    assert inspect(container, "{{.State.Status}}") == "exited"


async def test_a_nats_outage_answers_503_and_keeps_kernel_state(
    stack: Stack, placed: Placed
) -> None:
    kernel_id = next(iter(placed))  # its worker process crashed before: it keeps `kept`
    async with connect(stack, kernel_id) as before:
        await before.execute("1")
        (nats,) = stack.containers("nats")
        docker("kill", nats)
        try:
            answers = rest(stack, "GET", "/api/kernels")
            print(f"REST during the NATS outage: {answers.status_code} {answers.text[:200]}")
        finally:
            began = time.monotonic()
            stack.compose("start", "nats")
        assert answers.status_code == 503
        assert {"message", "reason"} <= set(answers.json())
        until(lambda: _ready(stack), 120, "the api ready again")
        print(f"api ready {time.monotonic() - began:.1f} s after NATS was started again")
        # An open websocket works again or was closed with a code clients reconnect on.
        try:
            assert (await before.execute("print(kept)", timeout=60)).strip() == "still here"
        except websockets.ConnectionClosed:
            assert before.ws.close_code in (1001, 1011, 1012, 1013), before.ws.close_code
    assert (await run(stack, kernel_id, "print(kept)")).strip() == "still here"


def _ready(stack: Stack) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{stack.api}/api/health/ready", timeout=5).status_code == 200
    return False


def test_a_crashed_service_container_is_restarted(stack: Stack) -> None:
    (culler,) = stack.containers("culler")
    restarts = int(inspect(culler, "{{.RestartCount}}"))
    until(lambda: "ready" in _logs(culler).rsplit("culling is disabled", 1)[-1], 120, "ready")
    readies = _logs(culler).count(" ready")
    os.kill(int(inspect(culler, "{{.State.Pid}}")), signal.SIGKILL)  # a crash, not docker kill
    until(lambda: int(inspect(culler, "{{.RestartCount}}")) == restarts + 1, 60, "the restart")
    until(lambda: _logs(culler).count(" ready") > readies, 120, "the restarted culler ready")
    until(lambda: inspect(culler, "{{.State.Health.Status}}") == "healthy", 120, "healthy")


def test_events_are_queryable(stack: Stack, placed: Placed) -> None:
    found = httpx.get(
        f"{stack.events}/api/events", params={"limit": 1000}, headers=stack.headers, timeout=10
    )
    assert found.status_code == 200, found.text
    text = json.dumps(found.json()["events"])
    assert any(kernel_id in text for kernel_id in placed), "no event about this module's kernels"


ENV_IMAGE = "kernelbus-kernel-worker-envs"
WHERE = (
    "import sys\n"
    "try:\n"
    "    import httpx\n"
    "    print(sys.executable, 'httpx', httpx.__version__)\n"
    "except ImportError:\n"
    "    print(sys.executable, 'no httpx')\n"
)


@pytest.fixture(scope="module")
def env_kernels(stack: Stack) -> tuple[str, str]:
    """docs/kernel-environments.md, in compose: a worker image layer with a second virtualenv
    (deploy/kernel-env.Dockerfile, here with httpx, which the services' /venv lacks) and its
    kernelspec on JUPYTER_PATH, run through the overlay deploy/compose.kernel-env.yaml; one
    kernel of that kernelspec and one `python3` kernel."""
    began = time.monotonic()
    command = ["bash", str(SCRIPT), "image", ENV_IMAGE, "deploy/kernel-env.Dockerfile"]
    command += ["PACKAGES=ipykernel httpx", "ENV_NAME=data-science"]
    built = subprocess.run(
        command,
        env=_script_env(stack.project, stack.env_file),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert built.returncode == 0, f"building {ENV_IMAGE} failed:\n{built.stderr[-3000:]}"
    print(f"kernel-env image built: {time.monotonic() - began:.1f} s")
    stack.overlays.append(ROOT / "deploy" / "compose.kernel-env.yaml")
    began = time.monotonic()
    stack.compose("up", "-d", "--wait", "--no-build", "--scale", "kernel-worker=1")

    def offered() -> bool:
        specs = rest(stack, "GET", "/api/kernelspecs")
        return specs.status_code == 200 and "data-science" in specs.json()["kernelspecs"]

    until(offered, 180, "the data-science kernelspec offered")
    print(f"workers recreated from {ENV_IMAGE}: {time.monotonic() - began:.1f} s")
    created = httpx.post(
        f"{stack.api}/api/kernels",
        json={"name": "data-science"},
        headers=stack.headers,
        timeout=120,
    )
    assert created.status_code == 201, created.text
    return created.json()["id"], start_kernel(stack)


async def test_a_kernel_runs_in_an_environment_of_its_own(
    stack: Stack, env_kernels: tuple[str, str]
) -> None:
    own, services = env_kernels
    assert (await run(stack, own, WHERE)).split()[:2] == [
        "/opt/kernel-envs/data-science/bin/python",
        "httpx",
    ]
    # A python3 kernel of the same worker: the services' own environment, without httpx.
    assert (await run(stack, services, WHERE)).split() == ["/venv/bin/python", "no", "httpx"]
    for kernel_id in env_kernels:
        assert rest(stack, "DELETE", f"/api/kernels/{kernel_id}").status_code == 204


def test_every_service_stops_by_itself_on_sigterm(stack: Stack) -> None:
    """`docker compose stop` SIGTERMs each container; none needs the SIGKILL after 10 s."""
    running = set(stack.compose("ps", "-q").split())
    began = time.monotonic()
    stack.compose("stop", "--timeout", "10")
    print(f"docker compose stop: {time.monotonic() - began:.1f} s")
    states = [
        json.loads(line) for line in stack.compose("ps", "-a", "--format", "json").splitlines()
    ]
    killed = {
        s["Name"]: s["ExitCode"]
        for s in states
        if s["ExitCode"] == 137 and any(c.startswith(s["ID"]) for c in running)
    }
    tails = {name: _logs(name)[-3000:] for name in killed}
    assert not killed, f"SIGKILLed at the stop timeout: {killed}; their last log lines: {tails}"


# --- the 3-node NATS cluster variant (deploy/compose.cluster.yaml), a stack of its own ------
# After the single-node stack was stopped above, so the two never run at once.

COUNT = 80  # a cell printing a counter every 0.1 s: 8 s, a node is killed after the 10th


@pytest.fixture(scope="module")
def cluster(stack: Stack) -> Iterator[Stack]:
    """The same images as `stack` (built by its run of compose-env.sh), three NATS nodes."""
    env = stack.env_file.read_text().splitlines()
    api_port, events_port = free_port(), free_port()
    env = [
        line
        for line in env
        if not line.startswith(("KERNELBUS_API_HOST_PORT=", "KERNELBUS_EVENTS_HOST_PORT="))
    ]
    env += [f"KERNELBUS_API_HOST_PORT={api_port}", f"KERNELBUS_EVENTS_HOST_PORT={events_port}"]
    env_file = stack.env_file.with_name("cluster.env")
    env_file.write_text("\n".join(env) + "\n")
    cluster = Stack(
        f"{stack.project}-cl",
        env_file,
        f"http://127.0.0.1:{api_port}",
        f"http://127.0.0.1:{events_port}",
        stack.token,
        overlays=[ROOT / "deploy" / "compose.cluster.yaml"],
    )
    try:
        began = time.monotonic()
        try:
            cluster.compose("up", "-d", "--wait", "--no-build")
        except AssertionError:
            print(cluster.compose("logs", "--no-color", "--tail", "40", check=False))
            raise
        print(f"\n3-node cluster stack up and healthy: {time.monotonic() - began:.1f} s")
        yield cluster
    finally:
        began = time.monotonic()
        cluster.compose("down", "-v", "--timeout", "10", check=False)
        print(f"cluster stack down -v: {time.monotonic() - began:.1f} s")


def _node_of(cluster: Stack, name_prefix: str) -> tuple[str, str]:
    """(service, container) of the NATS node that holds a client connection named so (the
    worker's init has a connection of its own, not counted)."""
    for service in ("nats", "nats-2", "nats-3"):
        (container,) = cluster.containers(service)
        connz = docker(
            "exec",
            container,
            "/bin/busybox",
            "wget",
            "-qO-",
            "http://127.0.0.1:8222/connz?limit=1000",
        )
        names = [c.get("name", "") for c in json.loads(connz).get("connections") or []]
        if any(n.startswith(name_prefix) and not n.startswith("worker-init-") for n in names):
            return service, container
    raise AssertionError(f"no node holds a connection named {name_prefix}*")


def test_the_cluster_replicates_buckets_and_streams_three_times(cluster: Stack) -> None:
    (node,) = cluster.containers("nats")
    jsz = json.loads(
        docker(
            "exec", node, "/bin/busybox", "wget", "-qO-", "http://127.0.0.1:8222/jsz?streams=true"
        )
    )
    streams = {
        s["name"]: s.get("cluster", {}).get("replicas") or []
        for account in jsz.get("account_details") or []
        for s in account.get("stream_detail") or []
    }
    assert {"KV_kb_kernels", "KV_kb_workers", "KERNELBUS_EVENTS"} <= set(streams), streams
    for name, replicas in streams.items():
        assert len(replicas) == 2, f"{name}: a leader and {len(replicas)} replicas"


async def test_losing_a_nats_node_under_a_live_client_loses_nothing(cluster: Stack) -> None:
    kernel_id = start_kernel(cluster)
    code = f"import time\nfor i in range({COUNT}):\n    print(i, flush=True)\n    time.sleep(0.1)\n"
    async with connect(cluster, kernel_id) as client:
        await client.execute("x = 41")
        # The node the worker is connected to: its kernel's output must fail over.
        service, node = _node_of(cluster, "worker-")
        msg = _message("execute_request", {"code": code, "silent": False}, client.session)
        await client.ws.send(json.dumps(msg))
        values: list[int] = []
        replied = idle = False
        killed = 0.0
        async with asyncio.timeout(120):
            while not (replied and idle):
                reply = await client.recv()
                if reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                    continue
                kind = reply["msg_type"]
                if kind == "stream":
                    values += [int(v) for v in reply["content"]["text"].split()]
                    if len(values) >= 10 and not killed:
                        await asyncio.to_thread(docker, "kill", node)
                        killed = time.monotonic()
                elif kind == "execute_reply":
                    replied = True
                elif kind == "status" and reply["content"]["execution_state"] == "idle":
                    idle = True
        print(
            f"killed {service} (the worker's node); the cell ended "
            f"{time.monotonic() - killed:.1f} s later"
        )
        assert killed, "the node was never killed"
        assert values == list(range(COUNT)), f"got {len(values)} values: {values}"
        # REST and the same websocket go on; the kernel keeps its state.
        answered = rest(cluster, "GET", f"/api/kernels/{kernel_id}")
        assert answered.status_code == 200 and answered.json()["execution_state"] != "dead"
        assert (await client.execute("print(x)")).strip() == "41"
    assert (await run(cluster, kernel_id, "print(x + 1)")).strip() == "42"
    # A registry write needs the stream's new leader: nats-server elects it 4-9 s after the
    # node's loss (compiled in; issue 14), and meanwhile the api answers 503 + Retry-After.
    # The client retries as told; shown, not asserted on speed.
    statuses = []
    deadline = time.monotonic() + 60
    while not statuses or statuses[-1] == 503:
        assert time.monotonic() < deadline, f"DELETE answered {statuses}"
        response = rest(cluster, "DELETE", f"/api/kernels/{kernel_id}")
        statuses.append(response.status_code)
        if response.status_code == 503:
            await asyncio.sleep(float(response.headers["Retry-After"]))
    print(f"DELETE answered {statuses}")
    assert statuses[-1] == 204, statuses
