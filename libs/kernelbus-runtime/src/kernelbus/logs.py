"""Structured logging: text or JSON lines, with kernel_id and worker_id fields when known.

Pass ids with `log.info("...", extra={"kernel_id": kid})`; a `LoggerAdapter` from
`kernel_logger()` does it for every line about one kernel.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

_FIELDS = ("kernel_id", "worker_id", "api_instance", "conn_id")

# `?token=...` in URLs (Jupyter clients put the token in websocket URLs): uvicorn's access and
# websocket log lines would carry it in clear.
_QUERY_TOKEN = re.compile(r"(?i)([?&;](?:token|access_token|auth_token)=)[^&;\s\"']*")


def redact(text: str) -> str:
    """`text` with the value of every token query parameter replaced by `[redacted]`."""
    return _QUERY_TOKEN.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Redacts query-string tokens from a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for field in _FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(
            f"{f}={getattr(record, f)}" for f in _FIELDS if getattr(record, f, None) is not None
        )
        return f"{text} [{ids}]" if ids else text


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactTokens())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class _IdAdapter(logging.LoggerAdapter[logging.Logger]):
    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def kernel_logger(logger: logging.Logger, **ids: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose every line carries the given ids (kernel_id, worker_id, ...)."""
    return _IdAdapter(logger, ids)
