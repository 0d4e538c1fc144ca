"""`kernelbus-worker`: run a kernel-worker, configured only by environment variables."""

from __future__ import annotations

from kernelbus.logs import setup_logging
from kernelbus.quickexit import skip_final_collection
from kernelbus.startup import run_service
from kernelbus.telemetry import setup_tracing
from kernelbus_worker.settings import WorkerSettings
from kernelbus_worker.worker import run_worker


def main() -> None:
    settings = WorkerSettings()
    setup_logging(settings.log_format, settings.log_level)
    skip_final_collection()
    setup_tracing("kernelbus-worker")
    run_service("kernelbus-worker", run_worker(settings))


if __name__ == "__main__":
    main()
