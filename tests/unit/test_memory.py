"""glibc malloc keeps freed memory for the next large message (`kernelbus.memory`, ADR 0025):
relaying multi-MB messages stops paying a page fault per fresh page. Measured by page-fault
counts (ru_minflt) of a child process, not by time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kernelbus.memory import keep_freed_memory
from kernelbus.settings import BusSettings

CHILD = """
import json, resource, sys
from kernelbus.memory import keep_freed_memory
applied = keep_freed_memory(int(sys.argv[1]))
message = bytes(5_000_000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # what a relay does per message: chunks, a join, a copy
    chunks = [message[i : i + (1 << 20)] for i in range(0, len(message), 1 << 20)]
    whole = b"".join(chunks)
    copy = bytes(memoryview(whole)[8:])
    del chunks, whole, copy
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _relay(keep_bytes: int) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(keep_bytes)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, int] = json.loads(done.stdout)
    return result


def test_kept_memory_spares_the_page_faults_of_every_large_message() -> None:
    default = _relay(0)
    kept = _relay(64 * 1024 * 1024)
    if not kept["applied"]:
        pytest.skip("not glibc: no mallopt")  # pragma: no cover - the CI image is Debian
    assert not default["applied"]
    # 20 messages of 5 MB copied three times: ~75k pages by default, a few thousand kept.
    assert default["faults"] > 20_000, default
    assert kept["faults"] * 5 < default["faults"], (kept, default)


def test_zero_leaves_the_c_library_alone() -> None:
    assert keep_freed_memory(0) is False


def test_a_negative_amount_is_refused_by_the_settings() -> None:
    with pytest.raises(ValueError, match=r"malloc_keep_bytes|KERNELBUS_MALLOC_KEEP_BYTES"):
        BusSettings.model_validate({"KERNELBUS_MALLOC_KEEP_BYTES": -1})
