"""The worker's activity rules (jupyter_server's): what counts as activity, what moves state."""

from __future__ import annotations

import pytest

from kernelbus_worker.activity import Activity


def idle() -> Activity:
    return Activity(execution_state="idle")


def test_an_execute_request_makes_the_kernel_busy_then_idle() -> None:
    a = idle()
    assert a.observe("status", "execute_request", "busy") == (True, True)
    assert a.execution_state == "busy"
    assert a.observe("stream", "execute_request", None) == (True, False)
    assert a.observe("status", "execute_request", "idle") == (True, True)
    assert a.execution_state == "idle"


@pytest.mark.parametrize("parent", ["kernel_info_request", "comm_info_request", "debug_request"])
def test_untracked_requests_neither_count_nor_make_busy(parent: str) -> None:
    a = idle()
    assert a.observe("status", parent, "busy") == (False, False)
    assert a.execution_state == "idle"
    assert a.observe("status", parent, "idle") == (False, False)


def test_a_tracked_message_type_counts_without_a_parent() -> None:
    assert idle().observe("comm_msg", None, None) == (True, False)


def test_an_untracked_type_without_a_parent_does_not_count_while_idle() -> None:
    assert idle().observe("stream", None, None) == (False, False)


def test_anything_counts_while_busy() -> None:
    a = Activity(execution_state="busy")
    assert a.observe("stream", None, None) == (True, False)
    assert a.observe("status", "kernel_info_request", "idle") == (True, False)
    assert a.execution_state == "busy"


def test_a_starting_kernel_becomes_idle_on_its_first_non_starting_status() -> None:
    a = Activity()
    assert a.execution_state == "starting"
    assert a.observe("status", None, "starting") == (False, False)
    assert a.execution_state == "starting"
    # the nudge's kernel_info status is the kernel's first sign of life: idle, not busy
    assert a.observe("status", "kernel_info_request", "busy") == (False, True)
    assert a.execution_state == "idle"


def test_a_status_without_a_state_changes_nothing() -> None:
    a = idle()
    assert a.observe("status", "execute_request", None) == (True, False)
    assert a.execution_state == "idle"
