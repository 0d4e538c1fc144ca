"""jupyter_server's iopub rate limiting (PROTOCOLS §2.8), with an explicit clock."""

from __future__ import annotations

from kernelbus_api.channels.ratelimit import IOPubRateLimiter, RateLimits


def limiter(msg_rate: float = 20, data_rate: float = 0, window: float = 1) -> IOPubRateLimiter:
    return IOPubRateLimiter(RateLimits(msg_rate, data_rate, window))


def test_the_documented_example_passes_20_then_one_notice_then_drops() -> None:
    rl = limiter()
    verdicts = [rl.check("display_data", 100, now=0.001 * i) for i in range(100)]
    assert [v.drop for v in verdicts[:20]] == [False] * 20
    assert verdicts[20].drop
    assert len(verdicts[20].notices) == 1
    assert verdicts[20].notices[0].startswith("IOPub message rate exceeded.")
    assert all(v.drop and not v.notices for v in verdicts[21:])


def test_status_comm_open_and_execute_input_are_never_counted_or_dropped() -> None:
    rl = limiter(msg_rate=1)
    rl.check("display_data", 0, now=0)
    rl.check("display_data", 0, now=0)
    assert rl.msgs_exceeded
    for msg_type in ("status", "comm_open", "execute_input"):
        assert not rl.check(msg_type, 10**9, now=0).drop


def test_idle_status_resets_counters_and_flags() -> None:
    rl = limiter(msg_rate=1)
    rl.check("display_data", 0, now=0)
    assert rl.check("display_data", 0, now=0).drop
    assert not rl.check("status", 0, now=0, idle=True).drop
    assert not rl.msgs_exceeded
    assert not rl.check("display_data", 0, now=0).drop


def test_busy_status_does_not_reset() -> None:
    rl = limiter(msg_rate=1)
    rl.check("display_data", 0, now=0)
    rl.check("display_data", 0, now=0)
    rl.check("status", 0, now=0, idle=False)
    assert rl.msgs_exceeded


def test_flag_clears_once_the_rate_falls_below_80_percent() -> None:
    rl = limiter(msg_rate=10, window=1)
    for i in range(11):
        rl.check("display_data", 0, now=0.01 * i)
    assert rl.msgs_exceeded
    # The window has passed: the 10 counted messages expired, the rate is 1/s < 8/s.
    assert not rl.check("display_data", 0, now=2.0).drop
    assert not rl.msgs_exceeded


def test_dropped_messages_are_taken_back_out_of_the_counts() -> None:
    rl = limiter(msg_rate=10, window=1)
    for i in range(11):
        rl.check("display_data", 0, now=0.0 + 0.001 * i)
    for i in range(1000):
        rl.check("display_data", 0, now=0.1 + 0.0001 * i)
    # Only the 10 accepted messages were ever counted; they expire at t=1.0.
    assert not rl.check("display_data", 0, now=1.05).drop


def test_data_rate_counts_stream_bytes_only() -> None:
    rl = limiter(msg_rate=0, data_rate=100, window=1)
    assert not rl.check("display_data", 10_000, now=0).drop
    verdict = rl.check("stream", 101, now=0)
    assert verdict.drop
    assert verdict.notices[0].startswith("IOPub data rate exceeded.")
    assert "KERNELBUS_IOPUB_DATA_RATE_LIMIT=100 (bytes/sec)" in verdict.notices[0]


def test_both_limits_can_trip_on_one_message_with_two_notices() -> None:
    rl = limiter(msg_rate=1, data_rate=10, window=1)
    rl.check("stream", 5, now=0)
    verdict = rl.check("stream", 20, now=0)
    assert verdict.drop
    assert [n.split("\n")[0] for n in verdict.notices] == [
        "IOPub message rate exceeded.",
        "IOPub data rate exceeded.",
    ]


def test_zero_limits_disable_each_check() -> None:
    rl = limiter(msg_rate=0, data_rate=0)
    assert not any(rl.check("stream", 10**9, now=0).drop for _ in range(10_000))


def test_notice_names_the_setting_and_current_values() -> None:
    rl = limiter(msg_rate=20, window=1)
    notices = [n for i in range(30) for n in rl.check("display_data", 0, now=0).notices]
    assert notices == [
        "IOPub message rate exceeded.\n"
        "The Jupyter server will temporarily stop sending output\n"
        "to the client in order to avoid crashing it.\n"
        "To change this limit, set the config variable\n"
        "`KERNELBUS_IOPUB_MSG_RATE_LIMIT`.\n"
        "\n"
        "Current values:\n"
        "KERNELBUS_IOPUB_MSG_RATE_LIMIT=20 (msgs/sec)\n"
        "KERNELBUS_RATE_LIMIT_WINDOW=1 (secs)\n"
    ]
