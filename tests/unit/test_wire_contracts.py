"""Wire facts spelled once in `kernelbus`, and the services that use them agree."""

from __future__ import annotations

import json
import re

import jupyter_client
import pytest

from kernelbus import eventpublisher, events, subjects
from kernelbus.framing import PROTOCOL_VERSION, message_frame, unpack_v1
from kernelbus.messages import UUID_PATTERN, new_kernel_id
from kernelbus_api.channels.codec import stderr_notice
from kernelbus_culler.worker_loss import dead_status_frame
from kernelbus_jupyter import events as jupyter_events_handler


def test_our_protocol_version_is_the_one_jupyter_client_writes() -> None:
    assert jupyter_client.protocol_version == PROTOCOL_VERSION


def test_message_frame_builds_a_complete_jupyter_message() -> None:
    frame = message_frame(
        "iopub", "status", {"execution_state": "idle"}, session="s", parent_header={"msg_id": "p"}
    )
    channel, parts = unpack_v1(frame)
    header, parent, metadata, content = (json.loads(p) for p in parts)
    assert channel == "iopub"
    assert header["msg_type"] == "status" and header["session"] == "s"
    assert header["version"] == PROTOCOL_VERSION and header["username"] == "kernelbus"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", header["date"])
    assert header["msg_id"]
    assert (parent, metadata, content) == ({"msg_id": "p"}, {}, {"execution_state": "idle"})


@pytest.mark.parametrize(
    "frame",
    [dead_status_frame(), stderr_notice("too fast", {"msg_id": "p"}, "s1")],
    ids=["culler-dead-status", "api-stderr-notice"],
)
def test_every_service_writes_the_same_protocol_version(frame: bytes) -> None:
    _, parts = unpack_v1(frame)
    assert json.loads(parts[0])["version"] == PROTOCOL_VERSION


def test_culler_dead_status_has_an_empty_parent() -> None:
    _, parts = unpack_v1(dead_status_frame())
    assert json.loads(parts[1]) == {}
    assert json.loads(parts[3]) == {"execution_state": "dead"}


@pytest.mark.parametrize(
    ("action", "past"),
    [
        ("start", "started"),
        ("interrupt", "interrupted"),
        ("restart", "restarted"),
        ("shutdown", "shutdown"),
    ],
)
def test_kernel_action_words_success_as_jupyter_server(action: str, past: str) -> None:
    assert events.kernel_action(action, "k1", "python3") == {
        "action": action,
        "kernel_id": "k1",
        "kernel_name": "python3",
        "status": "success",
        "msg": f"Kernel k1 was {past}.",
    }


def test_kernel_action_error_carries_the_message_or_the_type() -> None:
    failed = events.kernel_action("restart", "k1", "python3", RuntimeError("boom"))
    assert (failed["status"], failed["msg"]) == ("error", "boom")
    assert events.kernel_action("start", "k1", "py", TimeoutError())["msg"] == "TimeoutError"


def test_a_failed_rest_request_reports_its_status_and_leaves_out_what_it_does_not_know() -> None:
    failed = events.kernel_action("start", None, "python3", "", status_code=503)
    assert failed == {
        "action": "start",
        "kernel_name": "python3",
        "status": "error",
        "status_code": 503,
        "msg": "Kernel start failed",
    }
    assert "status_code" not in events.kernel_action("restart", "k1", "py", RuntimeError("x"))


def test_the_stdlib_only_jupyter_server_handler_names_the_event_id_header_as_events_does() -> None:
    assert jupyter_events_handler.EVENT_ID_HEADER == events.EVENT_ID_HEADER


def test_kernel_ids_match_the_one_pattern() -> None:
    assert re.fullmatch(UUID_PATTERN.strip("^$"), new_kernel_id())
    assert not re.match(UUID_PATTERN, new_kernel_id().upper())


def test_a_client_messages_reply_subject_names_its_connection_and_number() -> None:
    """The worker routes replies by the connection the reply subject names (no header)."""
    parsed = subjects.parse_input_reply(subjects.input_reply("api-1", "c0ffee", 7))
    assert parsed == subjects.InputReply("api-1", "c0ffee", 7)


def test_kernel_action_payloads_validate_against_jupyter_servers_schema() -> None:
    logger = eventpublisher.build_logger()
    for data in (
        events.kernel_action("shutdown", new_kernel_id(), "python3"),
        events.kernel_action("start", new_kernel_id(), "python3", RuntimeError("no")),
        events.kernel_action("start", None, "python3", "No such kernel", status_code=404),
    ):
        capsule = logger.emit(schema_id=events.KERNEL_ACTIONS, data=data)  # raises when invalid
        assert capsule is not None and capsule["msg"] == data["msg"]
