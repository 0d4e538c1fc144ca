"""The culling decision: jupyter_server's rules (PROTOCOLS.md §5.2) and the refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kernelbus.models import ExecutionState, KernelspecInfo, WorkerHeartbeat
from kernelbus_culler.policy import (
    CullPolicy,
    Decision,
    KernelSnapshot,
    Verdict,
    cull_log_message,
    decide,
    metadata_timeouts,
    spec_timeouts,
)

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
KID = "4db5d35c-712c-4b42-a85b-0c07964f8e3f"


def kernel(
    state: ExecutionState = "idle",
    idle: float = 100.0,
    connections: int | None = 0,
    name: str = "python3",
) -> KernelSnapshot:
    return KernelSnapshot(KID, name, state, NOW - timedelta(seconds=idle), connections)


POLICY = CullPolicy(idle_timeout=60)


def test_disabled_policy_keeps_everything_even_dead() -> None:
    decision = decide(CullPolicy(idle_timeout=0), kernel("dead"), NOW)
    assert decision.verdict is Verdict.KEEP


@pytest.mark.parametrize("connections", [0, 3, None])
def test_dead_is_culled_whatever_else(connections: int | None) -> None:
    dead = kernel("dead", idle=0, connections=connections)
    assert decide(POLICY, dead, NOW).verdict is Verdict.CULL_DEAD


def test_idle_past_timeout_is_culled() -> None:
    decision = decide(POLICY, kernel("idle", idle=61), NOW)
    assert decision.verdict is Verdict.CULL_IDLE
    assert decision.idle_seconds == pytest.approx(61)
    assert decision.why == "idle"


def test_exactly_at_timeout_is_kept() -> None:
    assert decide(POLICY, kernel("idle", idle=60), NOW).verdict is Verdict.KEEP


def test_starting_kernel_nobody_connected_to_is_culled() -> None:
    assert decide(POLICY, kernel("starting", idle=61), NOW).cull


def test_recent_activity_is_kept() -> None:
    assert not decide(POLICY, kernel("idle", idle=10), NOW).cull


def test_busy_is_spared_unless_cull_busy() -> None:
    busy = kernel("busy", idle=600)
    assert decide(POLICY, busy, NOW).verdict is Verdict.KEEP
    assert decide(CullPolicy(idle_timeout=60, cull_busy=True), busy, NOW).cull


def test_connected_is_spared_unless_cull_connected() -> None:
    connected = kernel("idle", idle=600, connections=2)
    assert decide(POLICY, connected, NOW).verdict is Verdict.KEEP
    decision = decide(CullPolicy(idle_timeout=60, cull_connected=True), connected, NOW)
    assert decision.cull
    assert decision.why == "idle_connected"


def test_unknown_connections_never_culled_unless_cull_connected() -> None:
    unknown = kernel("idle", idle=600, connections=None)
    assert decide(POLICY, unknown, NOW).verdict is Verdict.UNTRUSTED
    assert decide(CullPolicy(idle_timeout=60, cull_connected=True), unknown, NOW).cull


def test_missing_record_is_never_culled() -> None:
    assert decide(POLICY, None, NOW).verdict is Verdict.UNTRUSTED


def test_last_activity_in_the_future_is_never_culled() -> None:
    future = kernel("idle", idle=-3600)
    decision = decide(CullPolicy(idle_timeout=1, cull_busy=True, cull_connected=True), future, NOW)
    assert decision.verdict is Verdict.UNTRUSTED


def test_small_clock_skew_counts_as_just_active() -> None:
    assert decide(CullPolicy(idle_timeout=1), kernel("idle", idle=-1), NOW).verdict is Verdict.KEEP


def test_kernelspec_timeout_overrides_global() -> None:
    policy = CullPolicy(idle_timeout=60, spec_timeouts={"slow": 3600})
    assert not decide(policy, kernel("idle", idle=600, name="slow"), NOW).cull
    assert decide(policy, kernel("idle", idle=600, name="python3"), NOW).cull


def test_kernelspec_timeout_ignored_while_global_disabled() -> None:
    policy = CullPolicy(idle_timeout=0, spec_timeouts={"python3": 1})
    assert not decide(policy, kernel("idle", idle=600), NOW).cull


def test_log_lines_match_jupyter_server() -> None:
    idle = kernel("idle", idle=61.7, connections=0)
    assert cull_log_message(idle, decide(POLICY, idle, NOW)) == (
        f"Culling 'idle' kernel 'python3' ({KID}) with 0 connections due to 61 seconds of "
        "inactivity."
    )
    dead = kernel("dead")
    assert cull_log_message(dead, Decision(Verdict.CULL_DEAD)) == (
        f"Culling 'dead' dead kernel 'python3' ({KID})."
    )


def _heartbeat(specs: dict[str, Any]) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id="w1",
        max_kernels=4,
        running_kernels=0,
        kernelspecs=[KernelspecInfo(name=n, spec=s) for n, s in specs.items()],
        started_at=NOW,
    )


def test_metadata_timeouts_read_from_heartbeats_and_bad_values_ignored() -> None:
    hb = _heartbeat(
        {
            "a": {"metadata": {"cull_idle_timeout": 600}},
            "b": {"metadata": {"cull_idle_timeout": "soon"}},
            "c": {"metadata": {"cull_idle_timeout": -1}},
            "d": {"metadata": {"cull_idle_timeout": True}},
            "e": {"metadata": "nonsense"},
            "f": {},
        }
    )
    assert metadata_timeouts([hb]) == {"a": 600.0}


def test_configured_timeouts_win_over_metadata() -> None:
    assert spec_timeouts({"a": 600, "b": 5}, {"a": 10}) == {"a": 10, "b": 5}
