"""`kernelbus-api`: run the api with uvicorn, configured only by environment variables."""

from __future__ import annotations

import uvicorn

from kernelbus.logs import setup_logging
from kernelbus.memory import keep_freed_memory
from kernelbus.quickexit import skip_final_collection
from kernelbus.settings import load_settings
from kernelbus.telemetry import setup_tracing
from kernelbus_api.app import create_app
from kernelbus_api.channels.keepalive import uvicorn_ws_options
from kernelbus_api.settings import ApiSettings


def main() -> None:
    settings = load_settings(ApiSettings, "kernelbus-api")
    setup_logging(settings.log_format, settings.log_level)
    skip_final_collection()
    keep_freed_memory(settings.malloc_keep_bytes)
    setup_tracing("kernelbus-api")
    uvicorn.run(
        create_app(settings),
        host=settings.ip,
        port=settings.port,
        log_config=None,
        **uvicorn_ws_options(settings),
    )


if __name__ == "__main__":
    main()
