"""EG's authorization rules as pure logic (kernelbus_api.authorization)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kernelbus.models import KernelspecInfo
from kernelbus_api.authorization import NotAuthorized, authorize, bind_username
from kernelbus_api.settings import ApiSettings


def spec(config: dict[str, Any] | None, display: str | None = "Py") -> KernelspecInfo:
    body: dict[str, Any] = {"argv": ["x"], "language": "python"}
    if display is not None:
        body["display_name"] = display
    if config is not None:
        body["metadata"] = {"process_proxy": {"config": config}}
    return KernelspecInfo(name="py", spec=body)


def settings(**values: Any) -> ApiSettings:
    return ApiSettings.model_validate(values)


@pytest.mark.parametrize(
    ("config", "glob", "user", "allowed"),
    [
        (None, {}, "root", False),
        (None, {}, "alice", True),
        (None, {}, None, True),
        (None, {"unauthorized_users": ""}, "root", True),
        ({"unauthorized_users": "bob, eve"}, {}, "eve", False),
        ({"unauthorized_users": "bob"}, {}, "root", False),  # a union with the global list
        ({"authorized_users": "alice"}, {}, "bob", False),
        ({"authorized_users": "alice"}, {}, None, False),
        ({"authorized_users": ["alice"]}, {"authorized_users": "bob"}, "bob", False),
        ({"authorized_users": "alice"}, {"authorized_users": "bob"}, "alice", True),
        (None, {"authorized_users": "bob"}, "alice", False),
        (None, {"authorized_users": "bob"}, "bob", True),
        ({"authorized_users": "Alice"}, {}, "alice", False),  # case-sensitive
        ({"authorized_users": 42}, {}, "x", True),  # a malformed list is no list
    ],
)
def test_rules(
    config: dict[str, Any] | None, glob: dict[str, str], user: str | None, allowed: bool
) -> None:
    try:
        authorize(settings(**glob), spec(config), user)
    except NotAuthorized:
        assert not allowed
    else:
        assert allowed


def test_messages_are_egs() -> None:
    with pytest.raises(NotAuthorized) as refused:
        authorize(settings(), spec(None, "Python 3"), "root")
    assert refused.value.message == (
        "User 'root' is not authorized to start kernel 'Python 3'. "
        "Ensure KERNEL_USERNAME is set to an appropriate value and retry the request."
    )
    with pytest.raises(NotAuthorized) as refused:
        authorize(settings(), spec({"authorized_users": "a"}, None), "b")
    assert refused.value.message.startswith(
        "User 'b' is not in the set of users authorized to start kernels. Ensure"
    )


def test_binding() -> None:
    assert bind_username(None, None) is None
    assert bind_username({"KERNEL_X": "1"}, "alice") == {
        "KERNEL_X": "1",
        "KERNEL_USERNAME": "alice",
    }
    assert bind_username({"KERNEL_USERNAME": "alice"}, "alice") == {"KERNEL_USERNAME": "alice"}
    with pytest.raises(NotAuthorized):
        bind_username({"KERNEL_USERNAME": "bob"}, "alice")
    with pytest.raises(NotAuthorized):
        bind_username({"KERNEL_USERNAME": 7}, "alice")


def test_short_user_tokens_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValidationError) as refused:
        settings(user_tokens={"short-secret": "alice"})
    message = refused.value.errors()[0]["msg"]  # what kernelbus-api prints when refusing
    assert "alice" in message
    assert "short-secret" not in message
