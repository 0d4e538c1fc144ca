"""Execution state and last activity from iopub, with jupyter_server's rules (PROTOCOLS §5.3).

Pure logic: fed the header fields of each iopub message, it says whether the message counts as
activity and what the execution state becomes. Nudge and kernel_info traffic never counts and
never makes a kernel busy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# jupyter_server's default `untracked_message_types`, in its order.
DEFAULT_UNTRACKED = (
    "comm_info_request",
    "comm_info_reply",
    "kernel_info_request",
    "kernel_info_reply",
    "shutdown_request",
    "shutdown_reply",
    "interrupt_request",
    "interrupt_reply",
    "debug_request",
    "debug_reply",
    "stream",
    "display_data",
    "update_display_data",
    "execute_input",
    "execute_result",
    "error",
    "status",
    "clear_output",
    "debug_event",
    "input_request",
    "input_reply",
)
UNTRACKED = frozenset(DEFAULT_UNTRACKED)


@dataclass
class Activity:
    untracked: frozenset[str] = UNTRACKED
    execution_state: str = field(default="starting")

    def observe(
        self, msg_type: str, parent_msg_type: str | None, status: str | None
    ) -> tuple[bool, bool]:
        """Feed one iopub message; returns (counts as activity, state changed)."""
        untracked = self.untracked
        tracked = msg_type not in untracked or (
            parent_msg_type is not None and parent_msg_type not in untracked
        )
        active = tracked or self.execution_state == "busy"
        before = self.execution_state
        if msg_type == "status" and status:
            if parent_msg_type is not None and parent_msg_type not in untracked:
                self.execution_state = status
            elif self.execution_state == "starting" and status != "starting":
                self.execution_state = "idle"
        return active, before != self.execution_state
