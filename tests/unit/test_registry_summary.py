"""The registry view's pre-rendered kernel model is byte for byte what the api rendered before
(Starlette's compact JSON of `KernelRecord.jupyter_model`)."""

from __future__ import annotations

import json

import pytest

from kernelbus.models import KernelRecord
from kernelbus.registryview import KernelSummary


@pytest.mark.parametrize("reason", ["", "worker w1 lost", 'quote " and ü'])
@pytest.mark.parametrize("connections", [0, 3])
def test_model_json_matches_the_jupyter_model(reason: str, connections: int) -> None:
    record = KernelRecord(
        id="k-1", name="python3", worker_id="w1", reason=reason, execution_state="busy"
    )
    summary = KernelSummary.of(record)
    expected = json.dumps(
        record.jupyter_model(connections), ensure_ascii=False, separators=(",", ":")
    ).encode()
    assert summary.model_json(connections) == expected
    assert summary.jupyter_model(connections) == record.jupyter_model(connections)
