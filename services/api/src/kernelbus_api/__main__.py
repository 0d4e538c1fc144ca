"""`kernelbus-api`: run the api with uvicorn, configured only by environment variables."""

from __future__ import annotations

import uvicorn

from kernelbus.logs import setup_logging
from kernelbus.telemetry import setup_tracing
from kernelbus_api.app import create_app
from kernelbus_api.settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    setup_logging(settings.log_format, settings.log_level)
    setup_tracing("kernelbus-api")
    uvicorn.run(
        create_app(settings),
        host=settings.ip,
        port=settings.port,
        log_config=None,
        ws="websockets",
        ws_ping_interval=None,
    )


if __name__ == "__main__":
    main()
