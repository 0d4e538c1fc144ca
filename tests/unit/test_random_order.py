"""Asked to, the suite runs in random order and says how to replay it (README, ADR 0009)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

ORDER = """
seen = []

def test_a():
    seen.append("a")

def test_b():
    seen.append("b")

def test_c():
    seen.append("c")

def test_order():
    print("ORDER", "".join(seen))
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_order=ORDER)
    return pytester.runpytest_subprocess(
        "-p", "kernelbus.testing.plugin", "-p", "no:cacheprovider", "-q", "-s", *args
    )


def test_a_run_names_its_seed_even_under_q(pytester: pytest.Pytester) -> None:
    result = run(pytester, "-p", "randomly", "--randomly-seed=7")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*replay it with -p randomly --randomly-seed=7*"])


def test_the_same_seed_gives_the_same_order(pytester: pytest.Pytester) -> None:
    orders = set()
    for _ in range(2):
        result = run(pytester, "-p", "randomly", "--randomly-seed=12345")
        orders.add(next(line for line in result.stdout.lines if line.startswith("ORDER")))
    assert len(orders) == 1


def test_no_randomly_runs_in_file_order_and_names_no_seed(pytester: pytest.Pytester) -> None:
    result = run(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    assert "randomly-seed" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*ORDER abc*"])
