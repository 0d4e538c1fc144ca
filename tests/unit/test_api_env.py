"""Filtering and checking a start request's env (EG rules)."""

from __future__ import annotations

import pytest

from kernelbus.errors import BadRequest
from kernelbus_api.kernel_env import MAX_VALUE_LENGTH, filter_env, kernel_env, launch_timeout


def test_only_kernel_names_and_allowed_names_are_kept() -> None:
    env = {"KERNEL_A": "1", "PATH": "/x", "JPY_SESSION_NAME": "nb", "SECRET": "s"}
    assert filter_env(env, frozenset({"JPY_SESSION_NAME"})) == {
        "KERNEL_A": "1",
        "JPY_SESSION_NAME": "nb",
    }


def test_star_allows_every_name() -> None:
    assert filter_env({"A": "1", "KERNEL_B": "2"}, frozenset({"*"})) == {"A": "1", "KERNEL_B": "2"}


def test_missing_env_is_empty() -> None:
    assert filter_env(None, frozenset()) == {}


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (5, "must be a string"),
        ("x" * (MAX_VALUE_LENGTH + 1), "exceeds maximum length"),
        ("a$b", "prohibited characters"),
        ("a`b`", "prohibited characters"),
        ("a\nb", "prohibited characters"),
        ("a\rb", "prohibited characters"),
        ("a\x00b", "prohibited characters"),
    ],
)
def test_bad_values_are_refused_naming_the_key_not_the_value(value: object, words: str) -> None:
    with pytest.raises(BadRequest) as info:
        filter_env({"KERNEL_X": value}, frozenset())
    assert "KERNEL_X" in info.value.message
    assert words in info.value.message
    assert str(value) not in info.value.message


def test_longest_allowed_value_passes() -> None:
    value = "x" * MAX_VALUE_LENGTH
    assert filter_env({"KERNEL_X": value}, frozenset()) == {"KERNEL_X": value}


def test_dropped_keys_are_not_checked() -> None:
    assert filter_env({"OTHER": "$HOME"}, frozenset()) == {}


def test_bad_names_are_refused() -> None:
    with pytest.raises(BadRequest):
        filter_env({"A=B": "1"}, frozenset({"*"}))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("60", 60.0),
        (" 7 ", 7.0),
        ("abc", 40.0),
        ("1.5", 40.0),
        ("0", 40.0),
        ("-3", 40.0),
        ("3601", 40.0),
        (None, 40.0),
    ],
)
def test_launch_timeout_is_whole_seconds_or_the_default(raw: str | None, expected: float) -> None:
    env = {} if raw is None else {"KERNEL_LAUNCH_TIMEOUT": raw}
    assert launch_timeout(env, 40.0) == expected


def test_special_variables_become_start_fields() -> None:
    env = {
        "KERNEL_LAUNCH_TIMEOUT": "12",
        "KERNEL_WORKING_DIR": "/home/u/nb",
        "KERNEL_USERNAME": "alice",
    }
    result = kernel_env(env, frozenset(), 40.0)
    assert result.launch_timeout == 12.0
    assert result.working_dir == "/home/u/nb"
    assert result.username == "alice"
    assert result.env == env


def test_no_special_variables() -> None:
    result = kernel_env({}, frozenset(), 33.0)
    assert (result.launch_timeout, result.working_dir, result.username) == (33.0, None, None)
