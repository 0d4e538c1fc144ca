"""`make test`'s scheduling over pytest-xdist workers (docs/testing.md, "In parallel"): each
file whole on one worker, all of tests/e2e on one worker."""

from __future__ import annotations

import pytest

from kernelbus.testing.xdistscope import E2E_DIR, scope_of

pytest_plugins = ["pytester"]


def test_a_test_is_scheduled_with_its_file_and_every_e2e_test_together() -> None:
    assert scope_of("tests/unit/test_a.py::test_x") == "tests/unit/test_a.py"
    assert scope_of("tests/unit/test_a.py::Case::test_y[1]") == "tests/unit/test_a.py"
    assert scope_of("tests/e2e/test_b.py::test_z") == E2E_DIR
    assert scope_of("tests/e2e/test_c.py::test_w[x::y]") == E2E_DIR
    assert scope_of("tests/integration/test_e2e_like.py::t") == "tests/integration/test_e2e_like.py"


WHERE = """
import os, pathlib

def test_{n}():
    pathlib.Path({out!r}, "{name}").write_text(os.environ["PYTEST_XDIST_WORKER"])
"""


def test_two_workers_run_the_e2e_files_on_one_worker_and_each_file_whole(
    pytester: pytest.Pytester,
) -> None:
    """Through xdist itself: the scheduler is the plugin's and is used by `--dist loadfile`."""
    out = pytester.path / "ran"
    out.mkdir()
    names = {"tests/e2e/test_e1.py": 2, "tests/e2e/test_e2.py": 2, "tests/e2e/test_e3.py": 2}
    names |= {f"tests/unit/test_u{n}.py": 2 for n in range(4)}
    for path, count in names.items():
        file = pytester.path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        stem = path.replace("/", "_").removesuffix(".py")
        file.write_text(
            "".join(WHERE.format(n=i, out=str(out), name=f"{stem}-{i}") for i in range(count))
        )
    result = pytester.runpytest_subprocess(
        "-p", "kernelbus.testing.plugin", "-p", "no:randomly", "-n", "2", "--dist", "loadfile"
    )
    result.assert_outcomes(passed=14)
    ran = {p.name: p.read_text() for p in out.iterdir()}
    assert len(ran) == 14, sorted(ran)
    e2e = {worker for name, worker in ran.items() if name.startswith("tests_e2e_")}
    assert len(e2e) == 1, ran
    for n in range(4):
        assert ran[f"tests_unit_test_u{n}-0"] == ran[f"tests_unit_test_u{n}-1"], ran
    assert len(set(ran.values())) == 2, "the unit files went to the other worker too"
