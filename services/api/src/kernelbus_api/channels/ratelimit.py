"""IOPub rate limiting per websocket: jupyter_server's `_limit_rate`, as pure logic.

The clock is passed in, so the algorithm is testable without waiting. Counted messages sit in
a sliding window of `(expiry, bytes)` entries; a rate is count / window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from textwrap import dedent

NEVER_COUNTED = frozenset({"status", "comm_open", "execute_input"})


@dataclass(frozen=True)
class RateLimits:
    msg_rate: float
    data_rate: float
    window: float


@dataclass(frozen=True)
class Verdict:
    """`drop`: do not send the message. `notices`: stderr texts to send in its place."""

    drop: bool
    notices: tuple[str, ...] = ()


@dataclass
class IOPubRateLimiter:
    limits: RateLimits
    msgs_exceeded: bool = False
    data_exceeded: bool = False
    _msg_count: int = 0
    _byte_count: int = 0
    _queue: deque[tuple[float, int]] = field(default_factory=deque)

    def check(self, msg_type: str, nbytes: int, now: float, idle: bool = False) -> Verdict:
        """Judge one iopub message; `nbytes` counts only for `stream`, `idle` for status idle."""
        if msg_type == "status" and idle:
            self._reset()
        if msg_type in NEVER_COUNTED:
            return Verdict(drop=False)
        self._expire(now)
        byte_count = nbytes if msg_type == "stream" else 0
        self._msg_count += 1
        self._byte_count += byte_count
        self._queue.append((now + self.limits.window, byte_count))
        notices = tuple(n for n in (self._update_msg_flag(), self._update_data_flag()) if n)
        if self.msgs_exceeded or self.data_exceeded:
            self._msg_count -= 1
            self._byte_count -= byte_count
            self._queue.pop()
            return Verdict(drop=True, notices=notices)
        return Verdict(drop=False)

    def _reset(self) -> None:
        self._queue.clear()
        self._msg_count = self._byte_count = 0
        self.msgs_exceeded = self.data_exceeded = False

    def _expire(self, now: float) -> None:
        while self._queue and now >= self._queue[0][0]:
            _, nbytes = self._queue.popleft()
            self._byte_count -= nbytes
            self._msg_count -= 1

    def _update_msg_flag(self) -> str | None:
        limit = self.limits.msg_rate
        rate = self._msg_count / self.limits.window
        if limit > 0 and rate > limit:
            if not self.msgs_exceeded:
                self.msgs_exceeded = True
                return msg_rate_notice(self.limits)
        elif self.msgs_exceeded and rate < 0.8 * limit:
            self.msgs_exceeded = False
        return None

    def _update_data_flag(self) -> str | None:
        limit = self.limits.data_rate
        rate = self._byte_count / self.limits.window
        if limit > 0 and rate > limit:
            if not self.data_exceeded:
                self.data_exceeded = True
                return data_rate_notice(self.limits)
        elif self.data_exceeded and rate < 0.8 * limit:
            self.data_exceeded = False
        return None


# The texts jupyter_server writes, naming Kernelbus's settings instead of ServerApp's.
def msg_rate_notice(limits: RateLimits) -> str:
    return dedent(
        f"""\
        IOPub message rate exceeded.
        The Jupyter server will temporarily stop sending output
        to the client in order to avoid crashing it.
        To change this limit, set the config variable
        `KERNELBUS_IOPUB_MSG_RATE_LIMIT`.

        Current values:
        KERNELBUS_IOPUB_MSG_RATE_LIMIT={limits.msg_rate:g} (msgs/sec)
        KERNELBUS_RATE_LIMIT_WINDOW={limits.window:g} (secs)
        """
    )


def data_rate_notice(limits: RateLimits) -> str:
    return dedent(
        f"""\
        IOPub data rate exceeded.
        The Jupyter server will temporarily stop sending output
        to the client in order to avoid crashing it.
        To change this limit, set the config variable
        `KERNELBUS_IOPUB_DATA_RATE_LIMIT`.

        Current values:
        KERNELBUS_IOPUB_DATA_RATE_LIMIT={limits.data_rate:g} (bytes/sec)
        KERNELBUS_RATE_LIMIT_WINDOW={limits.window:g} (secs)
        """
    )
