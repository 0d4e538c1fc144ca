"""`/metrics` on a real api and a real worker: the named series move when a kernel starts and a
websocket executes code."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from channels_support import open_socket, started_kernel

from kernelbus import natsserver
from kernelbus.processes import wait_for
from kernelbus.testing.plugin import ApiProcess, Services, _http_ok

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ApiProcess]]:
    """An api and a worker whose metrics endpoint listens on a free loopback port.

    On a nats-server of their own: the counts below are of this worker, so no other test's
    worker may take its kernels, and no kernel of this module may outlive it elsewhere.
    """
    root = tmp_path_factory.mktemp("metrics")
    server = natsserver.start(root / "nats", log_file=root / "nats.log")
    started = Services(root, server.url)
    port = natsserver.free_port()
    try:
        worker = started.worker({"KERNELBUS_WORKER_METRICS_PORT": str(port)})
        worker_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _http_ok(f"{worker_url}/health/live"), 30, "worker metrics", worker)
        yield worker_url, started.api()
    finally:
        started.stop_all()  # the worker shuts down every kernel a test left behind
        server.stop()


def value(text: str, series: str) -> float:
    """The value of one sample line (`name` or `name{labels}`) of a Prometheus exposition."""
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, flags=re.M)
    assert found, f"{series} not exposed:\n{text}"
    return float(found.group(1))


def samples(text: str) -> dict[str, float]:
    """Every sample line of an exposition, by `name` or `name{labels}`."""
    return {
        name: float(number)
        for name, number in re.findall(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, flags=re.M)
    }


def scrape(url: str, headers: dict[str, str] | None = None) -> str:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def grown(before: str, after: str) -> dict[str, float]:
    """How much each counter grew between two scrapes: the module's cluster is shared, so a
    test counts only what it did itself, whatever ran before it."""
    old, new = samples(before), samples(after)
    return {name: new[name] - old.get(name, 0.0) for name in new}


async def test_api_and_worker_count_a_kernel_and_its_messages(
    cluster: tuple[str, ApiProcess],
) -> None:
    worker_url, api = cluster
    worker_before, api_before = scrape(worker_url), scrape(api.url, api.headers)
    async with started_kernel(api) as kid:
        socket = await open_socket(api, kid)
        try:
            await socket.run("print('x' * 1000)")
            api_text = scrape(api.url, api.headers)
            assert value(api_text, "kernelbus_api_websocket_connections") == 1
        finally:
            await socket.close()
        worker_text = scrape(worker_url)
        assert value(worker_text, "kernelbus_worker_kernels_running") == 1
    worker, api_grew = grown(worker_before, worker_text), grown(api_before, api_text)
    assert worker["kernelbus_worker_kernel_starts_total"] == 1
    assert worker["kernelbus_worker_kernel_start_seconds_count"] == 1
    assert worker['kernelbus_worker_messages_relayed_total{direction="to_kernel"}'] >= 1
    assert worker['kernelbus_worker_bytes_relayed_total{direction="to_clients"}'] > 1000
    assert api_grew["kernelbus_api_kernel_starts_total"] == 1
    assert api_grew["kernelbus_api_kernel_start_seconds_count"] == 1
    assert api_grew["kernelbus_api_websocket_connections_total"] == 1
    assert api_grew['kernelbus_api_messages_relayed_total{direction="from_clients"}'] >= 1
    assert api_grew['kernelbus_api_bytes_relayed_total{direction="to_clients"}'] > 1000
    assert value(scrape(worker_url), "kernelbus_worker_kernels_running") == 0


async def test_failed_starts_are_counted(cluster: tuple[str, ApiProcess]) -> None:
    _, api = cluster
    before = scrape(api.url, api.headers)
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
        started = await http.post("/api/kernels")  # no body: the default kernel, no failure
        assert started.status_code == 201
        try:
            refused = await http.post("/api/kernels", json={"name": "no-such-kernel"})
        finally:
            await http.delete(f"/api/kernels/{started.json()['id']}")
    assert refused.status_code >= 400
    failures = grown(before, scrape(api.url, api.headers))
    status = refused.status_code
    assert failures[f'kernelbus_api_kernel_start_failures_total{{status="{status}"}}'] == 1
    assert sum(v for k, v in failures.items() if "start_failures_total" in k) == 1


def test_api_metrics_need_the_token(cluster: tuple[str, ApiProcess]) -> None:
    _, api = cluster
    assert httpx.get(f"{api.url}/metrics", timeout=10).status_code == 401
