"""README.md stays current: the two commands come first and every setting is documented."""

from __future__ import annotations

from pathlib import Path

from kernelbus.settings_doc import rows

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == [
        "make run",
        "make test",
    ]


def test_every_setting_is_in_the_configuration_table() -> None:
    text = README.read_text()
    missing = [variable for _, variable, _, _ in rows() if variable not in text]
    assert not missing, f"add to README.md (python -m kernelbus.settings_doc): {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
