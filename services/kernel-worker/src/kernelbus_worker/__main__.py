"""`kernelbus-worker`: run a kernel-worker, configured only by environment variables."""

from __future__ import annotations

import uvloop

from kernelbus.logs import setup_logging
from kernelbus.memory import keep_freed_memory
from kernelbus.quickexit import skip_final_collection
from kernelbus.settings import load_settings
from kernelbus.startup import run_service
from kernelbus.telemetry import setup_tracing
from kernelbus_worker.settings import WorkerSettings
from kernelbus_worker.worker import run_worker


def main() -> None:
    settings = load_settings(WorkerSettings, "kernelbus-worker")
    setup_logging(settings.log_format, settings.log_level)
    skip_final_collection()
    keep_freed_memory(settings.malloc_keep_bytes)
    setup_tracing("kernelbus-worker")
    # uvloop: ~15% less worker CPU per relayed message than asyncio's selector loop, the
    # same latency (bench/perf.py A/B, ADR 0015); pyzmq's asyncio sockets work on any loop.
    run_service("kernelbus-worker", run_worker(settings), uvloop.run)


if __name__ == "__main__":
    main()
