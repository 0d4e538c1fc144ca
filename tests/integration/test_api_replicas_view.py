"""Read-your-writes across api replicas with the watch-fed registry view: a kernel started
through replica A is listed and found by replica B as soon as A's POST answered, and a kernel
deleted through A is gone from B's listing at once."""

from __future__ import annotations

import httpx
import pytest

from kernelbus.testing.plugin import Services

pytestmark = pytest.mark.integration


def test_start_on_one_replica_is_seen_by_another_at_once(services: Services) -> None:
    services.worker()
    a = services.api()
    b = services.api()
    started: list[str] = []
    with httpx.Client(timeout=60) as http:
        try:
            for _ in range(3):
                reply = http.post(f"{a.url}/api/kernels", json={}, headers=a.headers)
                assert reply.status_code == 201, reply.text
                kernel_id = reply.json()["id"]
                started.append(kernel_id)
                one = http.get(f"{b.url}/api/kernels/{kernel_id}", headers=b.headers)
                assert one.status_code == 200, one.text
                listed = http.get(f"{b.url}/api/kernels", headers=b.headers)
                assert kernel_id in {k["id"] for k in listed.json()}
            gone = started.pop()
            deleted = http.delete(f"{a.url}/api/kernels/{gone}", headers=a.headers)
            assert deleted.status_code == 204, deleted.text
            listed = http.get(f"{b.url}/api/kernels", headers=b.headers)
            ids = {k["id"] for k in listed.json()}
            assert gone not in ids and set(started) <= ids
            assert http.get(f"{b.url}/api/kernels/{gone}", headers=b.headers).status_code == 404
        finally:
            for kernel_id in started:
                http.delete(f"{a.url}/api/kernels/{kernel_id}", headers=a.headers)
