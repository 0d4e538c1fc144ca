"""`kernelbus-api`: run the api with uvicorn, configured only by environment variables."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from kernelbus.logs import setup_logging
from kernelbus.quickexit import skip_final_collection
from kernelbus.telemetry import setup_tracing
from kernelbus_api.app import create_app
from kernelbus_api.channels.keepalive import uvicorn_ws_options
from kernelbus_api.settings import ApiSettings


def load_settings() -> ApiSettings:
    """The settings, or exit 2 naming each invalid `KERNELBUS_*` variable and why."""
    try:
        return ApiSettings()
    except ValidationError as exc:
        lines = [
            f"  KERNELBUS_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        ]
        print(
            "kernelbus-api: invalid settings, refusing to start:", *lines, sep="\n", file=sys.stderr
        )
        raise SystemExit(2) from None


def main() -> None:
    settings = load_settings()
    setup_logging(settings.log_format, settings.log_level)
    skip_final_collection()
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
