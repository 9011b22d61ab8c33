"""JSON logs, one object per line, carrying the request id of the request being served (if any)."""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import time
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("mlplat_request_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and goes into the JSON object.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, request_id, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a single-line JSON object."""
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` that sends mlplat's and uvicorn's logs to stderr as JSON."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    logger = {"handlers": ["json"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": handler},
        "loggers": {name: dict(logger) for name in ("mlplat", "uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def configure_logging(level: str) -> None:
    """Install :func:`logging_config` for this process."""
    logging.config.dictConfig(logging_config(level))
