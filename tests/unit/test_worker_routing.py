"""The worker's pure routing state: reply routes, replay buffers, recent frames."""

from __future__ import annotations

import pytest

from kernelbus_worker.routing import RecentFrames, ReplayBuffer, RouteTable


def test_a_reply_goes_to_the_connection_that_sent_the_request() -> None:
    routes = RouteTable()
    routes.remember("req-1", "conn-a")
    routes.remember("req-2", "conn-b")
    assert routes.lookup("req-1") == "conn-a"
    assert routes.lookup("req-2") == "conn-b"
    assert routes.lookup("unknown") is None


def test_no_parent_means_no_route() -> None:
    routes = RouteTable()
    routes.remember("", "conn-a")
    assert routes.lookup(None) is None
    assert routes.lookup("") is None


def test_forget_removes_one_route_and_tolerates_unknown_ids() -> None:
    routes = RouteTable()
    routes.remember("req-1", "conn-a")
    routes.forget("req-1")
    routes.forget("never-seen")
    routes.forget(None)
    assert routes.lookup("req-1") is None
    assert len(routes) == 0


def test_the_table_is_bounded_and_drops_the_oldest_first() -> None:
    routes = RouteTable(max_entries=3)
    for i in range(5):
        routes.remember(f"req-{i}", f"conn-{i}")
    assert len(routes) == 3
    assert routes.lookup("req-0") is None and routes.lookup("req-1") is None
    assert [routes.lookup(f"req-{i}") for i in (2, 3, 4)] == ["conn-2", "conn-3", "conn-4"]


def test_a_re_sent_msg_id_is_routed_to_its_latest_sender() -> None:
    routes = RouteTable()
    routes.remember("req", "conn-a")
    routes.remember("req", "conn-b")
    assert routes.lookup("req") == "conn-b"
    assert len(routes) == 1


def buffer(**limits: float) -> ReplayBuffer:
    return ReplayBuffer(
        "s",
        max_messages=int(limits.get("max_messages", 100)),
        max_bytes=int(limits.get("max_bytes", 10_000)),
        max_age=limits.get("max_age", 60.0),
    )


def test_replay_buffer_drains_in_order_and_empties() -> None:
    buf = buffer()
    for i in range(3):
        buf.add(f"m{i}".encode(), now=0)
    assert len(buf) == 3
    assert buf.drain(now=1) == [b"m0", b"m1", b"m2"]
    assert len(buf) == 0 and buf.drain(now=1) == []


@pytest.mark.parametrize(
    ("limits", "added", "drain_at", "kept", "dropped"),
    [
        ({"max_messages": 2}, [(b"m0", 0), (b"m1", 0), (b"m2", 0), (b"m3", 0)], 0, 2, 2),
        ({"max_bytes": 10}, [(b"aaaa", 0), (b"bbbb", 0), (b"cccc", 0)], 0, 2, 1),
        ({"max_age": 10}, [(b"old", 0), (b"new", 5)], 12, 1, 1),
    ],
    ids=["count", "bytes", "age-at-drain"],
)
def test_replay_buffer_drops_the_oldest_past_each_bound(
    limits: dict[str, float],
    added: list[tuple[bytes, float]],
    drain_at: float,
    kept: int,
    dropped: int,
) -> None:
    buf = buffer(**limits)
    for frame, at in added:
        buf.add(frame, now=at)
    assert buf.drain(now=drain_at) == [frame for frame, _ in added[-kept:]]
    assert buf.dropped == dropped


def test_replay_buffer_byte_count_recovers_after_drain() -> None:
    buf = buffer(max_bytes=8)
    buf.add(b"12345678", now=0)
    buf.drain(now=0)
    buf.add(b"12345678", now=0)  # would overflow if the drained bytes were still counted
    assert buf.drain(now=0) == [b"12345678"]
    assert buf.dropped == 0


def test_recent_frames_keep_their_addressee_and_time() -> None:
    recent = RecentFrames(window=10)
    recent.add("conn-a", b"1", now=1)
    recent.add(None, b"2", now=2)
    recent.add("conn-b", b"3", now=3)
    assert recent.since(2) == [(2, None, b"2"), (3, "conn-b", b"3")]


def test_recent_frames_forget_what_left_the_window() -> None:
    recent = RecentFrames(window=10)
    recent.add("conn-a", b"old", now=0)
    recent.add("conn-a", b"new", now=11)
    assert recent.since(0) == [(11, "conn-a", b"new")]


def test_recent_frames_are_bounded_in_bytes() -> None:
    recent = RecentFrames(window=100, max_bytes=5)
    recent.add("c", b"abc", now=0)
    recent.add("c", b"def", now=1)
    assert recent.since(0) == [(1, "c", b"def")]


def test_hold_end_counts_dropped_frames_so_a_new_cursor_skips_what_is_held() -> None:
    from kernelbus_worker.routing import Hold

    hold = Hold({}, max_messages=2, max_bytes=1_000)
    for frame in (b"a", b"b", b"c"):
        hold.add(None, frame)
    assert hold.dropped == 1
    assert hold.end == 3
    hold.cursors["late"] = hold.end
    hold.add("late", b"d")
    assert hold.take("late") == [b"d"]
