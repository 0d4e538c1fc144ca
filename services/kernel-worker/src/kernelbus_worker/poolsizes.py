"""The warm-pool setting's syntax, and the pool size that follows demand."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from kernelbus.settings import comma_list


def parse_pool_sizes(value: str) -> dict[str, int]:
    """`python3=2,other=1` → {"python3": 2, "other": 1}; raises ValueError on bad input."""
    sizes: dict[str, int] = {}
    for item in comma_list(value):
        name, sep, count = item.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit():
            raise ValueError(f"pool entries look like name=count, not {item!r}")
        sizes[name.strip()] = int(count)
    return sizes


@dataclass
class PoolDemand:
    """How many warm kernels of each kernelspec to keep: the configured size at least, and as
    many as were started in the last `window` seconds (recent demand), up to `maximum`.

    Pure: the clock is passed in. A burst of N starts makes the next refill aim at N, so a
    second burst within the window is served warm; without starts the target falls back to
    the configured size once the burst has aged out of the window.
    """

    sizes: dict[str, int]
    maximum: int
    window: float
    _starts: dict[str, deque[float]] = field(default_factory=dict)

    def started(self, name: str, now: float) -> None:
        """A start of `name` was asked for (served warm or cold)."""
        if name not in self.sizes:
            return
        starts = self._starts.setdefault(name, deque())
        starts.append(now)
        self._expire(starts, now)

    def recent(self, name: str, now: float) -> int:
        starts = self._starts.get(name)
        if not starts:
            return 0
        self._expire(starts, now)
        return len(starts)

    def target(self, name: str, now: float) -> int:
        configured = self.sizes.get(name, 0)
        return max(configured, min(self.maximum, self.recent(name, now)))

    def targets(self, now: float) -> dict[str, int]:
        return {name: self.target(name, now) for name in self.sizes}

    def _expire(self, starts: deque[float], now: float) -> None:
        while starts and now - starts[0] > self.window:
            starts.popleft()
        # Never more than `maximum` remembered: more cannot raise the target.
        while len(starts) > max(self.maximum, 1):
            starts.popleft()
