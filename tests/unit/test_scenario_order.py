"""A `scenario` module keeps its tests in file order when the suite is shuffled
(pytest-randomly); other modules are shuffled as usual (`kernelbus.testing.plugin`)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

STEPS = "\n".join(f"def test_step_{i:02d}():\n    pass\n" for i in range(12))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_scenario_keeps_its_order_and_others_are_shuffled(
    pytester: pytest.Pytester, seed: int
) -> None:
    pytester.makepyfile(
        test_scenario="import pytest\npytestmark = pytest.mark.scenario\n" + STEPS,
        test_plain=STEPS,
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "kernelbus.testing.plugin",
        "-p",
        "randomly",
        "-p",
        "no:cacheprovider",
        f"--randomly-seed={seed}",
        "--collect-only",
        "-q",
    )
    ids = [line for line in result.stdout.lines if "::test_step_" in line]
    scenario = [i for i in ids if i.startswith("test_scenario.py")]
    plain = [i for i in ids if i.startswith("test_plain.py")]
    assert scenario == sorted(scenario) and len(scenario) == 12
    assert plain != sorted(plain) and len(plain) == 12
