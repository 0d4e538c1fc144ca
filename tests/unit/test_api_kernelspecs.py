"""Kernelspec models built from worker heartbeats."""

from __future__ import annotations

from kernelbus.models import KernelspecInfo, WorkerHeartbeat
from kernelbus.timefmt import utcnow
from kernelbus_api.kernelspecs import resource_key, select, spec_model, union

_SPEC = {"argv": ["python"], "display_name": "Python 3", "language": "python"}


def _worker(wid: str, *names: str) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=wid,
        max_kernels=4,
        running_kernels=0,
        kernelspecs=[KernelspecInfo(name=n, spec={**_SPEC, "display_name": wid}) for n in names],
        started_at=utcnow(),
    )


def test_union_of_workers() -> None:
    specs = union([_worker("b", "python3", "r"), _worker("a", "python3", "julia")])
    assert sorted(specs) == ["julia", "python3", "r"]
    assert specs["python3"].spec["display_name"] == "a"


def test_resource_keys() -> None:
    assert resource_key("logo-64x64.png") == "logo-64x64"
    assert resource_key("logo-svg.svg") == "logo-svg"
    assert resource_key("kernel.js") == "kernel.js"
    assert resource_key("kernel.css") == "kernel.css"
    assert resource_key("kernel.json") is None


def test_spec_model_has_all_three_keys_and_resource_urls() -> None:
    info = KernelspecInfo(
        name="python3", spec=_SPEC, resource_files=["logo-64x64.png", "kernel.js", "kernel.json"]
    )
    model = spec_model(info, "/gw/")
    assert model == {
        "name": "python3",
        "spec": _SPEC,
        "resources": {
            "logo-64x64": "/gw/kernelspecs/python3/logo-64x64.png",
            "kernel.js": "/gw/kernelspecs/python3/kernel.js",
        },
    }


def test_user_filter_is_tolerated_with_the_slash_workaround() -> None:
    specs = union([_worker("a", "python3", "py")])
    assert select(specs, "alice") == specs
    assert list(select(specs, "alice/py")) == ["py"]
    assert select(specs, "alice/none") == {}
