"""`kernelbus-events`: run the events service with uvicorn, configured by environment only."""

from __future__ import annotations

import uvicorn

from kernelbus.logs import setup_logging
from kernelbus.quickexit import skip_final_collection
from kernelbus.settings import load_settings
from kernelbus.telemetry import setup_tracing
from kernelbus_events.app import create_app
from kernelbus_events.settings import EventsSettings


def main() -> None:
    settings = load_settings(EventsSettings, "kernelbus-events")
    setup_logging(settings.log_format, settings.log_level)
    skip_final_collection()
    setup_tracing("kernelbus-events")
    uvicorn.run(create_app(settings), host=settings.ip, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
