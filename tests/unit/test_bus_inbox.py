"""Reply inbox prefixes per service role (`kernelbus.bus.inbox_prefix`)."""

from __future__ import annotations

import pytest

from kernelbus import bus
from kernelbus.settings import BusSettings


def test_no_role_keeps_the_shared_default() -> None:
    assert bus.inbox_prefix(None) == "_INBOX"


@pytest.mark.parametrize("role", ["api", "worker", "culler", "events", "gpu-pool_2"])
def test_a_role_gets_its_own_prefix(role: str) -> None:
    assert bus.inbox_prefix(role) == f"_INBOX_{role}"


@pytest.mark.parametrize("role", ["", "a.b", "a>", "*", "with space", "x" * 33])
def test_a_role_that_is_not_one_subject_token_is_refused(role: str) -> None:
    with pytest.raises(ValueError, match="invalid bus role"):
        bus.inbox_prefix(role)


async def test_connect_refuses_a_bad_role_before_dialling() -> None:
    settings = BusSettings(nats_url="nats://127.0.0.1:1", nats_connect_attempts=1)
    with pytest.raises(ValueError, match="invalid bus role"):
        await bus.connect(settings, name="bad-role", role="a.b")
