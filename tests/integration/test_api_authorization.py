"""Authorization as Enterprise Gateway does it, against a real api and a real worker:
kernelspec `process_proxy.config.authorized_users` / `unauthorized_users`, the global
KERNELBUS_AUTHORIZED_USERS / KERNELBUS_UNAUTHORIZED_USERS (default `root`), 403 with EG's
message before anything is placed; and, beyond EG, tokens bound to users
(KERNELBUS_USER_TOKENS): KERNEL_USERNAME is the token's user, never what the client claims."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from channels_support import open_socket

from kernelbus import natsserver
from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = pytest.mark.integration

SHARED = "shared-gateway-token"
ALICE = "alice-token-0123456789abcdef"
MALLORY = "mallory-token-0123456789abcdef"
ENSURE = "Ensure KERNEL_USERNAME is set to an appropriate value and retry the request."


def _spec(root: Path, name: str, display: str, config: dict[str, Any] | None) -> None:
    spec_dir = root / "kernels" / name
    spec_dir.mkdir(parents=True)
    spec: dict[str, Any] = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display,
        "language": "python",
    }
    if config is not None:
        spec["metadata"] = {"process_proxy": {"class_name": "any", "config": config}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("authz")
    jupyter = root / "jupyter"
    _spec(jupyter, "open", "Open Python", None)
    # EG's form: comma-separated strings.
    _spec(
        jupyter,
        "restricted",
        "Restricted Python",
        {"authorized_users": "alice,bob,mallory", "unauthorized_users": "mallory"},
    )
    _spec(jupyter, "listed", "Listed Python", {"authorized_users": ["carol"]})
    server = natsserver.start(root / "nats", log_file=root / "nats.log")
    started = Services(root, server.url)
    try:
        started.worker({"JUPYTER_PATH": str(jupyter), "KERNELBUS_WORKER_KERNELSPECS": ""})
        yield started
    finally:
        started.stop_all()
        server.stop()


@pytest.fixture(scope="module")
def api(cluster: Services) -> ApiProcess:
    tokens = json.dumps({ALICE: "alice", MALLORY: "mallory"})
    return cluster.api({"KERNELBUS_USER_TOKENS": tokens}, token=SHARED)


@pytest.fixture(scope="module")
def listed_api(cluster: Services) -> ApiProcess:
    """An api with a global authorized list (and no user tokens)."""
    return cluster.api({"KERNELBUS_AUTHORIZED_USERS": "dave, erin"}, token=SHARED)


def _client(api: ApiProcess, token: str = SHARED) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"token {token}"}, timeout=90)


def _start(http: httpx.Client, name: str, user: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"name": name}
    if user is not None:
        body["env"] = {"KERNEL_USERNAME": user}
    return http.post("/api/kernels", json=body)


def _refused(response: httpx.Response, message: str) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["message"] == message
    assert response.json()["reason"] == message


def _started(http: httpx.Client, response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    kid: str = response.json()["id"]
    assert http.delete(f"/api/kernels/{kid}").status_code == 204
    return kid


def _kernel_ids(http: httpx.Client) -> set[str]:
    return {k["id"] for k in http.get("/api/kernels").json()}


def test_root_is_refused_by_default(api: ApiProcess) -> None:
    with _client(api) as http:
        before = _kernel_ids(http)
        _refused(
            _start(http, "open", "root"),
            f"User 'root' is not authorized to start kernel 'Open Python'. {ENSURE}",
        )
        assert _kernel_ids(http) == before  # nothing placed, nothing started


def test_the_kernelspec_unauthorized_list_is_added_to_the_global_one(api: ApiProcess) -> None:
    with _client(api) as http:
        _refused(
            _start(http, "restricted", "mallory"),
            f"User 'mallory' is not authorized to start kernel 'Restricted Python'. {ENSURE}",
        )
        _refused(
            _start(http, "restricted", "root"),
            f"User 'root' is not authorized to start kernel 'Restricted Python'. {ENSURE}",
        )


def test_the_kernelspec_authorized_list_admits_only_its_users(api: ApiProcess) -> None:
    with _client(api) as http:
        _refused(
            _start(http, "restricted", "zoe"),
            f"User 'zoe' is not in the set of users authorized to start kernel "
            f"'Restricted Python'. {ENSURE}",
        )
        _refused(
            _start(http, "listed", "Carol"),  # case-sensitive, as EG
            f"User 'Carol' is not in the set of users authorized to start kernel "
            f"'Listed Python'. {ENSURE}",
        )
        _started(http, _start(http, "restricted", "bob"))
        _started(http, _start(http, "listed", "carol"))
        _started(http, _start(http, "open", "zoe"))  # no list: anyone but root


def test_the_global_authorized_list_and_its_kernelspec_override(
    listed_api: ApiProcess,
) -> None:
    with _client(listed_api) as http:
        _refused(
            _start(http, "open", "alice"),
            f"User 'alice' is not in the set of users authorized to start kernel "
            f"'Open Python'. {ENSURE}",
        )
        _started(http, _start(http, "open", "erin"))
        # The kernelspec's own list replaces the global one (EG).
        _started(http, _start(http, "restricted", "alice"))
        _refused(
            _start(http, "restricted", "dave"),
            f"User 'dave' is not in the set of users authorized to start kernel "
            f"'Restricted Python'. {ENSURE}",
        )


def test_sessions_are_authorized_too(api: ApiProcess) -> None:
    with _client(api, MALLORY) as http:
        body = {"path": "a.ipynb", "type": "notebook", "kernel": {"name": "restricted"}}
        refused = http.post("/api/sessions", json=body)
        assert refused.status_code == 403, refused.text
        assert "User 'mallory' is not authorized" in refused.json()["message"]
        assert http.get("/api/sessions").json() == []


def test_a_user_token_binds_kernel_username(api: ApiProcess) -> None:
    with _client(api, ALICE) as http:
        assert http.get("/api/kernels").status_code == 200  # the token authenticates
        refused = _start(http, "open", "bob")
        assert refused.status_code == 403, refused.text
        assert "does not match the user of the token" in refused.json()["message"]
        assert ALICE not in refused.text
        _started(http, _start(http, "restricted", "alice"))
    with _client(api, MALLORY) as http:
        # Mallory's token cannot pass for bob on the kernelspec that refuses mallory.
        assert _start(http, "restricted", "bob").status_code == 403
        _refused(
            _start(http, "restricted"),
            f"User 'mallory' is not authorized to start kernel 'Restricted Python'. {ENSURE}",
        )


async def test_a_user_token_fills_kernel_username_in(api: ApiProcess) -> None:
    with _client(api, ALICE) as http:
        created = _start(http, "restricted")  # no KERNEL_USERNAME sent
        assert created.status_code == 201, created.text
        kid = created.json()["id"]
        try:
            socket = await open_socket(replace(api, token=ALICE), kid)
            try:
                outputs = await socket.run("import os; print(os.environ['KERNEL_USERNAME'])")
            finally:
                await socket.close()
            assert any(m["content"].get("text") == "alice\n" for m in outputs), outputs
        finally:
            assert http.delete(f"/api/kernels/{kid}").status_code == 204


def test_the_shared_token_still_sends_its_users_names(api: ApiProcess) -> None:
    with _client(api) as http:
        _started(http, _start(http, "restricted", "bob"))


def test_an_unknown_token_is_refused(api: ApiProcess) -> None:
    with _client(api, "not-a-token-of-anyone-at-all") as http:
        assert http.get("/api/kernels").status_code == 401
        assert _start(http, "open", "alice").status_code == 401


def test_user_tokens_need_no_shared_token(cluster: Services, tmp_path: Path) -> None:
    """KERNELBUS_USER_TOKENS alone turns authentication on."""
    own = Services(tmp_path, cluster.nats_url)
    try:
        lone = own.api({"KERNELBUS_USER_TOKENS": json.dumps({ALICE: "alice"})}, token="")
        with httpx.Client(base_url=lone.url, timeout=30) as http:
            assert http.get("/api/kernels").status_code == 401
            wrong = http.get("/api/kernels", headers={"Authorization": "token nope"})
            assert wrong.status_code == 401
            ok = http.get("/api/kernels", headers={"Authorization": f"token {ALICE}"})
            assert ok.status_code == 200
    finally:
        own.stop_all()
