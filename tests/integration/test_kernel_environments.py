"""Kernels in an environment of their own (docs/kernel-environments.md): a kernelspec in
another virtualenv, found through the worker's JUPYTER_PATH, runs that virtualenv's Python and
sees its packages — not the services' virtualenv."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest
from channels_support import open_socket

from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = pytest.mark.integration


def _make_kernel_env(root: Path) -> Path:
    """A virtualenv with ipykernel and a package of its own, and its kernelspec.

    To stay fast and offline it reuses this interpreter's ipykernel through a .pth file instead
    of `pip install ipykernel` (what a real environment would do)."""
    env = root / "data-science-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    site = Path(purelib)
    (site / "services-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (site / "only_in_this_env.py").write_text("WHERE = 'the kernel environment'\n")
    spec = root / "share" / "jupyter" / "kernels" / "data-science"
    spec.mkdir(parents=True)
    body = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (data-science env)",
        "language": "python",
    }
    (spec / "kernel.json").write_text(json.dumps(body))
    return env


async def _run_in_new_kernel(api: ApiProcess, name: str, code: str) -> str:
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as client:
        specs = (await client.get("/api/kernelspecs")).json()["kernelspecs"]
        assert name in specs, sorted(specs)
        started = await client.post("/api/kernels", json={"name": name})
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
        sock = await open_socket(api, kernel_id)
        try:
            seen = await sock.run(code)
        finally:
            await sock.close()
            await client.delete(f"/api/kernels/{kernel_id}")
    return "".join(m["content"]["text"] for m in seen if m["header"]["msg_type"] == "stream")


async def test_a_kernelspec_from_another_venv_runs_that_venvs_python(
    services: Services, tmp_path: Path
) -> None:
    env = _make_kernel_env(tmp_path)
    services.worker({"JUPYTER_PATH": str(tmp_path / "share" / "jupyter")})
    api = services.api()
    code = "import sys, only_in_this_env\nprint(sys.prefix)\nprint(only_in_this_env.WHERE)"
    printed = await _run_in_new_kernel(api, "data-science", code)
    prefix, where = printed.splitlines()
    assert Path(prefix) == env
    assert Path(prefix) != Path(sys.prefix)  # not the services' virtualenv
    assert where == "the kernel environment"
    # The services' own python3 kernel does not see that environment's package.
    code = "import importlib.util as u, sys\nprint(sys.prefix, u.find_spec('only_in_this_env'))"
    assert await _run_in_new_kernel(api, "python3", code) == f"{sys.prefix} None\n"
