"""Every REST route against real workers and real ipykernel kernels.

The module shares one private nats-server, one worker and one api; tests that need other
settings start their own api on it, and tests that count kernels delete what they start.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest

from kernelbus import natsserver
from kernelbus.models import KernelRecord
from kernelbus.registry import Registry
from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = pytest.mark.integration

MODEL_KEYS = {"id", "name", "last_activity", "execution_state", "connections"}


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec `sleeper` whose kernel never becomes ready (launch timeouts)."""
    root = tmp_path_factory.mktemp("jupyter-path")
    spec_dir = root / "kernels" / "sleeper"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-c", "import time; time.sleep(300)", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Sleeper", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(kernel))
    # `stalls-on-restart`: a real kernel the first time; its restarted process never answers.
    stalls = root / "kernels" / "stalls-on-restart"
    stalls.mkdir(parents=True)
    marker = root / "stalls-started-once"
    launcher = stalls / "launch.py"
    launcher.write_text(
        "import os, sys, time\n"
        f"marker = {str(marker)!r} + '-' + os.environ['KERNEL_ID']\n"
        "if os.path.exists(marker):\n    time.sleep(300)\n"
        "open(marker, 'w').close()\n"
        "from ipykernel import kernelapp\n"
        "kernelapp.launch_new_instance(argv=['-f', sys.argv[1]])\n"
    )
    stalling = {
        "argv": [sys.executable, str(launcher), "{connection_file}"],
        "display_name": "Stalls on restart",
        "language": "python",
    }
    (stalls / "kernel.json").write_text(json.dumps(stalling))
    return root


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, jupyter_path: Path
) -> Iterator[tuple[Services, ApiProcess]]:
    root = tmp_path_factory.mktemp("api-kernels")
    server = natsserver.start(root / "nats", log_file=root / "nats.log")
    started = Services(root, server.url)
    try:
        started.worker({"KERNELBUS_WORKER_ID": "w-main", "JUPYTER_PATH": str(jupyter_path)})
        yield started, started.api(token="t0ken")
    finally:
        started.stop_all()
        server.stop()


@pytest.fixture(scope="module")
def api(cluster: tuple[Services, ApiProcess]) -> ApiProcess:
    return cluster[1]


@pytest.fixture
def client(api: ApiProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, headers=api.headers, timeout=90) as http:
        yield http


@pytest.fixture
async def registry(cluster: tuple[Services, ApiProcess]) -> AsyncIterator[Registry]:
    nc = await nats.connect(cluster[0].nats_url)
    try:
        yield await Registry.open(nc.jetstream())
    finally:
        await nc.close()


def _extra_api(cluster: tuple[Services, ApiProcess], env: dict[str, str]) -> httpx.Client:
    api = cluster[0].api(env, token="")
    return httpx.Client(base_url=api.url, timeout=90)


def test_kernel_lifecycle(client: httpx.Client) -> None:
    created = client.post("/api/kernels", json={"name": "python3"})
    assert created.status_code == 201, created.text
    model = created.json()
    kid = model["id"]
    assert set(model) == MODEL_KEYS
    assert str(uuid.UUID(kid)) == kid
    assert model["name"] == "python3"
    assert model["connections"] == 0
    assert model["last_activity"].endswith("Z")
    assert created.headers["location"] == f"/api/kernels/{kid}"

    assert client.get(f"/api/kernels/{kid}").json()["id"] == kid
    assert kid in [k["id"] for k in client.get("/api/kernels").json()]
    assert client.post(f"/api/kernels/{kid}/interrupt", json={}).status_code == 204
    restarted = client.post(f"/api/kernels/{kid}/restart", json={})
    assert restarted.status_code == 200
    assert restarted.json()["id"] == kid

    deleted = client.delete(f"/api/kernels/{kid}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert client.get(f"/api/kernels/{kid}").status_code == 404
    assert client.delete(f"/api/kernels/{kid}").status_code == 404
    assert kid not in [k["id"] for k in client.get("/api/kernels").json()]


def test_start_without_body_uses_the_default(client: httpx.Client) -> None:
    created = client.post("/api/kernels")
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "python3"
    assert client.delete(f"/api/kernels/{created.json()['id']}").status_code == 204


def test_ready_with_a_worker(api: ApiProcess) -> None:
    assert httpx.get(f"{api.url}/api/health/ready").json() == {"status": "ok", "reason": ""}


def test_kernel_id_is_idempotent(client: httpx.Client) -> None:
    kid = str(uuid.uuid4())
    first = client.post("/api/kernels", json={"kernel_id": kid})
    assert first.status_code == 201, first.text
    again = client.post("/api/kernels", json={"kernel_id": kid, "name": "sleeper"})
    assert again.status_code == 201
    assert (again.json()["id"], again.json()["name"]) == (kid, "python3")
    assert [k["id"] for k in client.get("/api/kernels").json()].count(kid) == 1
    assert client.delete(f"/api/kernels/{kid}").status_code == 204


def test_unknown_kernel_name_is_500(client: httpx.Client) -> None:
    response = client.post("/api/kernels", json={"name": "nope"})
    assert response.status_code == 500
    assert response.json() == {
        "message": "No such kernel named nope",
        "reason": "Internal Server Error",
    }


def test_launch_timeout_from_env_is_500(client: httpx.Client) -> None:
    body = {"name": "sleeper", "env": {"KERNEL_LAUNCH_TIMEOUT": "2"}}
    response = client.post("/api/kernels", json=body)
    assert response.status_code == 500
    assert "did not start" in response.json()["message"]
    assert client.get("/api/kernels").json() == []


def test_launch_timeout_setting(cluster: tuple[Services, ApiProcess]) -> None:
    with _extra_api(cluster, {"KERNELBUS_LAUNCH_TIMEOUT": "2"}) as other:
        response = other.post("/api/kernels", json={"name": "sleeper"})
        invalid = other.post(
            "/api/kernels", json={"name": "sleeper", "env": {"KERNEL_LAUNCH_TIMEOUT": "soon"}}
        )
    assert response.status_code == 500
    assert invalid.status_code == 500


def test_kernel_info_timeout_setting_bounds_a_restart(cluster: tuple[Services, ApiProcess]) -> None:
    with _extra_api(cluster, {"KERNELBUS_KERNEL_INFO_TIMEOUT": "2"}) as other:
        created = other.post("/api/kernels", json={"name": "stalls-on-restart"})
        assert created.status_code == 201, created.text
        kid = created.json()["id"]
        restarted = other.post(f"/api/kernels/{kid}/restart", json={})
        assert restarted.status_code == 500
        assert restarted.json() == {
            "message": "Exception restarting kernel",
            "reason": "Internal Server Error",
        }
        assert other.delete(f"/api/kernels/{kid}").status_code == 204


async def test_username_is_recorded(api: ApiProcess, registry: Registry) -> None:
    body = {"env": {"KERNEL_USERNAME": "alice", "KERNEL_WORKING_DIR": "/nonexistent"}}
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=90) as client:
        created = await client.post("/api/kernels", json=body)
        assert created.status_code == 201, created.text
        record = await registry.get_kernel(created.json()["id"])
        assert record is not None
        assert (record.username, record.worker_id) == ("alice", "w-main")
        assert (await client.delete(f"/api/kernels/{record.id}")).status_code == 204


def test_start_body_is_json_whatever_its_content_type(client: httpx.Client) -> None:
    """`curl -d '{"name":"python3"}'` says application/x-www-form-urlencoded; KG reads JSON."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    created = client.post("/api/kernels", content=b'{"name":"python3"}', headers=form)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "python3"
    assert client.delete(f"/api/kernels/{created.json()['id']}").status_code == 204
    broken = client.post("/api/kernels", content=b"name=python3", headers=form)
    assert broken.status_code == 400
    assert broken.json()["message"] == "Invalid JSON in body of request"


def test_kernelspecs(client: httpx.Client) -> None:
    listing = client.get("/api/kernelspecs").json()
    assert listing["default"] == "python3"
    assert {"python3", "sleeper"} <= set(listing["kernelspecs"])
    python3 = listing["kernelspecs"]["python3"]
    assert set(python3) == {"name", "spec", "resources"}
    assert python3["spec"]["language"] == "python"
    assert python3["resources"]["logo-64x64"] == "/kernelspecs/python3/logo-64x64.png"
    assert client.get("/api/kernelspecs/python3").json() == python3
    assert client.get("/api/kernelspecs", params={"user": "alice"}).json() == listing
    only = client.get("/api/kernelspecs", params={"user": "alice/python3"}).json()
    assert list(only["kernelspecs"]) == ["python3"]


def test_kernelspec_resources(client: httpx.Client) -> None:
    logo = client.get("/kernelspecs/python3/logo-64x64.png")
    assert logo.status_code == 200
    assert logo.headers["content-type"] == "image/png"
    assert logo.headers["cache-control"] == "max-age=2592000"
    assert logo.content.startswith(b"\x89PNG")
    head = client.head("/kernelspecs/python3/logo-64x64.png")
    assert (head.status_code, head.content) == (200, b"")
    for path in (
        "/kernelspecs/python3/kernel.json",
        "/kernelspecs/python3/..%2Fkernel.json",
        "/kernelspecs/python3/nothing.png",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["reason"] == "Not Found"
    missing = client.get("/kernelspecs/nope/logo-64x64.png")
    assert missing.json()["message"] == "Kernel spec nope not found"


def test_max_kernels(cluster: tuple[Services, ApiProcess]) -> None:
    with _extra_api(cluster, {"KERNELBUS_MAX_KERNELS": "1"}) as limited:
        first = limited.post("/api/kernels", json={})
        assert first.status_code == 201, first.text
        refused = limited.post("/api/kernels", json={})
        assert refused.status_code == 403
        assert refused.json() == {"reason": "Forbidden", "message": "Resource Limit"}
        assert limited.delete(f"/api/kernels/{first.json()['id']}").status_code == 204
        second = limited.post("/api/kernels", json={})
        assert second.status_code == 201, second.text
        assert limited.delete(f"/api/kernels/{second.json()['id']}").status_code == 204


async def test_max_kernels_holds_across_replicas(cluster: tuple[Services, ApiProcess]) -> None:
    services = cluster[0]
    urls = [services.api({"KERNELBUS_MAX_KERNELS": "1"}, token="").url for _ in range(2)]
    async with httpx.AsyncClient(timeout=90) as client:
        responses = await asyncio.gather(
            *(client.post(f"{url}/api/kernels", json={}) for url in urls * 2)
        )
        assert sorted(r.status_code for r in responses) == [201, 403, 403, 403]
        created = next(r for r in responses if r.status_code == 201)
        deleted = await client.delete(f"{urls[0]}/api/kernels/{created.json()['id']}")
        assert deleted.status_code == 204


def test_max_kernels_per_user(cluster: tuple[Services, ApiProcess]) -> None:
    def start(user: str) -> httpx.Response:
        return limited.post("/api/kernels", json={"env": {"KERNEL_USERNAME": user}})

    with _extra_api(cluster, {"KERNELBUS_MAX_KERNELS_PER_USER": "1"}) as limited:
        alice = start("alice")
        assert alice.status_code == 201, alice.text
        assert start("alice").status_code == 403
        bob = start("bob")
        assert bob.status_code == 201, bob.text
        for created in (alice, bob):
            assert limited.delete(f"/api/kernels/{created.json()['id']}").status_code == 204


def test_force_and_default_kernel_name(cluster: tuple[Services, ApiProcess]) -> None:
    with _extra_api(cluster, {"KERNELBUS_FORCE_KERNEL_NAME": "python3"}) as forced:
        created = forced.post("/api/kernels", json={"name": "sleeper"})
        assert created.status_code == 201, created.text
        assert created.json()["name"] == "python3"
        assert forced.delete(f"/api/kernels/{created.json()['id']}").status_code == 204
    with _extra_api(cluster, {"KERNELBUS_DEFAULT_KERNEL_NAME": "nope"}) as defaulted:
        assert defaulted.get("/api/kernelspecs").json()["default"] == "nope"
        response = defaulted.post("/api/kernels", json={})
    assert response.status_code == 500
    assert response.json()["message"] == "No such kernel named nope"


async def test_least_loaded_placement(
    services: Services, fresh_nats: natsserver.NatsServer
) -> None:
    services.worker(
        {"KERNELBUS_WORKER_ID": "w-a", "KERNELBUS_WORKER_MAX_KERNELS": "2"}, nats_url=fresh_nats.url
    )
    services.worker(
        {"KERNELBUS_WORKER_ID": "w-b", "KERNELBUS_WORKER_MAX_KERNELS": "3"}, nats_url=fresh_nats.url
    )
    api = services.api(nats_url=fresh_nats.url, token="")
    nc = await nats.connect(fresh_nats.url)
    try:
        registry = await Registry.open(nc.jetstream())
        async with httpx.AsyncClient(base_url=api.url, timeout=90) as client:
            first = await _owner(client, registry)
            assert first.worker_id == "w-b"  # 3 free slots against 2
            await _until_running(registry, "w-b", 1)
            second = await _owner(client, registry)
            assert second.worker_id == "w-a"  # 2 against 2: the lower id
            for record in (first, second):
                assert (await client.delete(f"/api/kernels/{record.id}")).status_code == 204
    finally:
        await nc.close()


async def _owner(client: httpx.AsyncClient, registry: Registry) -> KernelRecord:
    created = await client.post("/api/kernels", json={})
    assert created.status_code == 201, created.text
    record = await registry.get_kernel(created.json()["id"])
    assert record is not None
    return record


async def _until_running(registry: Registry, worker_id: str, running: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for worker in await registry.live_workers():
            if worker.worker_id == worker_id and worker.running_kernels == running:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{worker_id} never reported {running} running kernels")


def test_sessions(client: httpx.Client) -> None:
    body = {"path": "nb/a.ipynb", "name": "a.ipynb", "type": "notebook", "kernel": {}}
    created = client.post("/api/sessions", json=body)
    assert created.status_code == 201, created.text
    session = created.json()
    sid, kid = session["id"], session["kernel"]["id"]
    assert created.headers["location"] == f"/api/sessions/{sid}"
    assert session["notebook"] == {"path": "nb/a.ipynb", "name": "a.ipynb"}
    assert set(session["kernel"]) == MODEL_KEYS
    assert client.post("/api/sessions", json=body).json()["id"] == sid
    assert client.get(f"/api/sessions/{sid}").json() == session
    assert [s["id"] for s in client.get("/api/sessions").json()] == [sid]

    moved = client.patch(f"/api/sessions/{sid}", json={"path": "nb/b.ipynb"}).json()
    assert (moved["path"], moved["kernel"]["id"]) == ("nb/b.ipynb", kid)
    swapped = client.patch(f"/api/sessions/{sid}", json={"kernel": {"name": "python3"}}).json()
    assert swapped["kernel"]["id"] != kid
    assert client.get(f"/api/kernels/{kid}").status_code == 404

    assert client.delete(f"/api/sessions/{sid}").status_code == 204
    assert client.get(f"/api/sessions/{sid}").status_code == 404
    assert client.get(f"/api/kernels/{swapped['kernel']['id']}").status_code == 404
    assert client.get("/api/sessions").json() == []


def test_session_errors(client: httpx.Client) -> None:
    missing_path = client.post("/api/sessions", json={"type": "notebook"})
    assert missing_path.status_code == 400
    assert missing_path.json()["message"] == "Missing field in JSON data: path"
    missing_type = client.post("/api/sessions", json={"path": "x.py"})
    assert missing_type.json()["message"] == "Missing field in JSON data: type"
    unknown = client.post(
        "/api/sessions", json={"path": "x.py", "type": "console", "kernel": {"name": "nope"}}
    )
    assert unknown.status_code == 501
    assert unknown.json()["message"] == "No such kernel named nope"
    sid = str(uuid.uuid4())
    assert client.get(f"/api/sessions/{sid}").status_code == 404
    assert client.delete(f"/api/sessions/{sid}").status_code == 404
    assert client.get("/api/sessions/not-an-id").json() == {"message": "", "reason": "Not Found"}


def test_console_session_has_no_notebook(client: httpx.Client) -> None:
    created = client.post("/api/sessions", json={"path": "c", "type": "console"})
    assert created.status_code == 201, created.text
    assert "notebook" not in created.json()
    assert client.delete(f"/api/sessions/{created.json()['id']}").status_code == 204
