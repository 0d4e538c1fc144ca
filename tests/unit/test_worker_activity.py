"""jupyter_server's activity rules (PROTOCOLS §5.3) as the worker applies them to iopub."""

from __future__ import annotations

import pytest

from kernelbus_worker.activity import DEFAULT_UNTRACKED, Activity
from kernelbus_worker.settings import WorkerSettings


def test_the_first_status_after_starting_makes_a_kernel_idle_without_activity() -> None:
    activity = Activity()
    # A nudge / kernel_info round: untracked, so no activity; but the kernel is up now.
    active, changed = activity.observe("status", "kernel_info_request", "busy")
    assert (active, changed, activity.execution_state) == (False, True, "idle")
    assert activity.observe("status", "kernel_info_request", "idle") == (False, False)


def test_an_execution_is_activity_and_drives_the_state() -> None:
    activity = Activity(execution_state="idle")
    assert activity.observe("status", "execute_request", "busy") == (True, True)
    assert activity.execution_state == "busy"
    # Output of the request: untracked type, but a tracked parent, so activity.
    assert activity.observe("stream", "execute_request", None) == (True, False)
    assert activity.observe("status", "execute_request", "idle") == (True, True)
    assert activity.execution_state == "idle"


def test_untracked_traffic_of_an_idle_kernel_is_not_activity() -> None:
    activity = Activity(execution_state="idle")
    for msg_type, parent in [
        ("status", "comm_info_request"),
        ("stream", "kernel_info_request"),
        ("status", None),
    ]:
        active, changed = activity.observe(
            msg_type, parent, "idle" if msg_type == "status" else None
        )
        assert (active, changed) == (False, False), (msg_type, parent)


def test_anything_while_busy_counts_as_activity() -> None:
    activity = Activity(execution_state="busy")
    assert activity.observe("stream", None, None) == (True, False)


def test_a_message_type_outside_the_list_is_always_activity() -> None:
    activity = Activity(execution_state="idle")
    assert activity.observe("comm_msg", None, None) == (True, False)


def test_the_untracked_types_are_a_setting() -> None:
    defaults = WorkerSettings()
    assert defaults.untracked_types == frozenset(DEFAULT_UNTRACKED)
    assert "comm_info_request" in defaults.untracked_types
    narrowed = WorkerSettings(untracked_message_types="kernel_info_request, status")
    activity = Activity(narrowed.untracked_types, execution_state="idle")
    # kernel_info traffic still does not count; comm_info traffic now does.
    assert activity.observe("status", "kernel_info_request", "idle") == (False, False)
    assert activity.observe("status", "comm_info_request", "busy") == (True, True)
    assert activity.execution_state == "busy"


def test_kernel_working_dir_is_opt_in() -> None:
    assert WorkerSettings().use_kernel_working_dir is False
    assert WorkerSettings(use_kernel_working_dir=True).use_kernel_working_dir is True


@pytest.mark.parametrize("parent", ["kernel_info_request", "comm_info_request", "debug_request"])
def test_untracked_requests_neither_count_nor_make_busy(parent: str) -> None:
    activity = Activity(execution_state="idle")
    assert activity.observe("status", parent, "busy") == (False, False)
    assert activity.execution_state == "idle"
    assert activity.observe("status", parent, "idle") == (False, False)


def test_a_status_without_a_state_changes_nothing() -> None:
    activity = Activity(execution_state="idle")
    assert activity.observe("status", "execute_request", None) == (True, False)
    assert activity.execution_state == "idle"
