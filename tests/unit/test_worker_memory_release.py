"""The worker gives removed kernels' memory back after removals only (ADR 0025): a full
collection and a heap walk are not free, so nothing happens while no kernel went."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from kernelbus_worker import worker


async def test_memory_goes_back_once_per_batch_of_removals(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[None] = []

    def release_freed_memory() -> bool:
        calls.append(None)
        return True

    monkeypatch.setattr(worker, "release_freed_memory", release_freed_memory)
    supervisor: Any = SimpleNamespace(removals=3)
    release = worker._memory_release(supervisor)
    await release()
    assert calls == []  # removals before the worker started its loop are not its business
    supervisor.removals = 5
    await release()
    await release()
    assert len(calls) == 1
    supervisor.removals = 6
    await release()
    assert len(calls) == 2
