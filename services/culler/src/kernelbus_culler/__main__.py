"""`kernelbus-culler`: run the culler, configured only by environment variables."""

from __future__ import annotations

from kernelbus.logs import setup_logging
from kernelbus.quickexit import skip_final_collection
from kernelbus.settings import load_settings
from kernelbus.startup import run_service, stop_on_signals
from kernelbus.telemetry import setup_tracing
from kernelbus_culler.service import run
from kernelbus_culler.settings import CullerSettings


async def _main(settings: CullerSettings) -> None:
    await run(settings, stop_on_signals())


def main() -> None:
    settings = load_settings(CullerSettings, "kernelbus-culler")
    setup_logging(settings.log_format, settings.log_level)
    skip_final_collection()
    setup_tracing("kernelbus-culler")
    run_service("kernelbus-culler", _main(settings))


if __name__ == "__main__":
    main()
