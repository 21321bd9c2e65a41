"""Structured logs: one JSON object per line, with whatever ``extra`` the call gave.

No log line carries personal data in full: the message, every ``extra`` value and the
exception text go through ``shared.privacy`` (phones and ID numbers masked wherever they
appear, reporters' names and phones under any ``reporter`` key, any ``phone`` key)."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

from shared.privacy import mask_text, mask_value

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service or os.environ.get("GRIDFLOW_SERVICE", "gridflow")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": mask_text(record.getMessage()),
        }
        extra = {key: value for key, value in record.__dict__.items()
                 if key not in _STANDARD and not key.startswith("_")}
        out.update(mask_value(extra))
        if record.exc_info:
            out["exc"] = mask_text(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc"] = mask_text(record.exc_text)
        return json.dumps(out, ensure_ascii=False, default=_masked_str)


def _masked_str(value: Any) -> str:
    """Whatever JSON cannot carry, as text, masked."""
    return mask_text(str(value))


def logging_config(service: str, level: str = "INFO") -> dict[str, Any]:
    """A dictConfig for a service process: JSON lines on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "service": service}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "amqp": {"level": "WARNING"},
            "kombu": {"level": "WARNING"},
            "nameko": {"level": "WARNING"},
        },
    }
