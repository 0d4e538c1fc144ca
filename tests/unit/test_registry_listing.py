"""Listing kernels when the watch-fed view has not caught up (`Registry.kernel_summaries`).

The view's barrier gives up (its watcher is behind the stream), so the registry reads the
bucket directly; when JetStream does not answer that read either (a cluster electing a
leader: `BusUnavailable`, `BusTimeout`), the view's contents are served as they are rather
than failing the listing with a 503. Seen in
`tests/integration/test_cluster_writes_during_election.py` on a loaded host: right after the
re-election the listing answered 503. No process, no NATS: the view holds entries set here
and the direct read is a stand-in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest

from kernelbus import subjects
from kernelbus.errors import BusTimeout, BusUnavailable, KernelbusError
from kernelbus.models import KernelRecord
from kernelbus.registry import Registry
from kernelbus.registryview import (
    BucketView,
    KernelSummary,
    RegistryView,
    decode_connections,
    decode_kernel,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def record(kernel_id: str) -> KernelRecord:
    return KernelRecord(
        id=kernel_id,
        name="python3",
        worker_id="w1",
        execution_state="idle",
        last_activity=NOW,
        started_at=NOW,
    )


def registry(held: list[str], *, ready: bool = True, caught_up: bool = False) -> Registry:
    """A registry whose view holds `held` and whose barrier succeeds only if `caught_up`."""
    none = cast(Any, None)
    kernels = BucketView(none, subjects.KERNELS_BUCKET, none, decode_kernel)
    kernels.entries = {k: (KernelSummary.of(record(k)), 0.0) for k in held}
    if ready:
        kernels.ready.set()

    async def barrier(timeout: float) -> bool:
        return caught_up

    kernels.barrier = barrier  # type: ignore[method-assign]
    connections = BucketView(none, subjects.CONNECTIONS_BUCKET, none, decode_connections)
    view = RegistryView(none, kernels, connections)
    return Registry(none, none, none, none, view=view)


def read_directly(reg: Registry, outcome: list[str] | KernelbusError) -> None:
    async def list_kernels() -> list[KernelRecord]:
        if isinstance(outcome, KernelbusError):
            raise outcome
        return [record(k) for k in outcome]

    reg.list_kernels = list_kernels  # type: ignore[method-assign]


@pytest.mark.parametrize(
    "error",
    [BusUnavailable("the stream has no leader"), BusTimeout("JetStream did not answer")],
    ids=["unavailable", "timeout"],
)
async def test_a_view_behind_and_a_bucket_not_answering_serve_the_view(
    error: KernelbusError,
) -> None:
    reg = registry(["a", "b"])
    read_directly(reg, error)
    assert sorted(s.id for s in await reg.kernel_summaries()) == ["a", "b"]


async def test_a_view_behind_and_a_bucket_answering_serve_the_bucket() -> None:
    reg = registry(["a", "b"])
    read_directly(reg, ["a", "c"])
    assert sorted(s.id for s in await reg.kernel_summaries()) == ["a", "c"]


async def test_a_view_caught_up_is_served_without_reading_the_bucket() -> None:
    reg = registry(["a"], caught_up=True)
    read_directly(reg, BusUnavailable("not read"))
    assert [s.id for s in await reg.kernel_summaries()] == ["a"]


async def test_without_a_loaded_view_the_error_is_the_listings() -> None:
    reg = registry([], ready=False)
    read_directly(reg, BusUnavailable("the stream has no leader"))
    with pytest.raises(BusUnavailable):
        await reg.kernel_summaries()


async def test_other_errors_are_not_hidden() -> None:
    reg = registry(["a"])
    read_directly(reg, KernelbusError("message bus error: something else"))
    with pytest.raises(KernelbusError):
        await reg.kernel_summaries()
