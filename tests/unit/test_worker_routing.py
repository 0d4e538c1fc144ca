"""The worker's pure routing state: reply routes, replay buffers, recent frames."""

from __future__ import annotations

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


def test_replay_buffer_drops_oldest_past_the_count_bound() -> None:
    buf = buffer(max_messages=2)
    for i in range(4):
        buf.add(f"m{i}".encode(), now=0)
    assert buf.drain(now=0) == [b"m2", b"m3"]
    assert buf.dropped == 2


def test_replay_buffer_drops_oldest_past_the_byte_bound() -> None:
    buf = buffer(max_bytes=10)
    buf.add(b"aaaa", now=0)
    buf.add(b"bbbb", now=0)
    buf.add(b"cccc", now=0)  # 12 bytes > 10: the oldest goes
    assert buf.drain(now=0) == [b"bbbb", b"cccc"]
    assert buf.dropped == 1


def test_replay_buffer_drops_what_aged_out_by_drain_time() -> None:
    buf = buffer(max_age=10)
    buf.add(b"old", now=0)
    buf.add(b"new", now=5)
    assert buf.drain(now=12) == [b"new"]
    assert buf.dropped == 1


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
