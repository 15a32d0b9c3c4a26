"""stdlib logging configured once: console JSON lines or readable text, and the rotating file."""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from aiva.context import log_fields_var, request_id_var
from aiva.settings.model import LogsSettings

# The attributes every LogRecord has; anything else on a record is an extra field.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

# Extras other libraries attach for their own formatters (uvicorn's ANSI-coloured copy).
_DROPPED_EXTRAS = frozenset({"color_message"})

# uvicorn's loggers go through our handlers; its access log is replaced by ours.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: the contract's fields, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "trace_id": getattr(record, "otelTraceID", None),
            "span_id": getattr(record, "otelSpanID", None),
            "request_id": request_id_var.get(),
        }
        entry.update(log_fields_var.get() or {})
        for name, value in record.__dict__.items():
            if name in _RECORD_ATTRS or name in _DROPPED_EXTRAS or name.startswith("otel"):
                continue
            entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(settings: LogsSettings) -> None:
    """Configure the root logger and uvicorn's loggers; the one place logging is set up."""
    handlers: dict[str, dict[str, Any]] = {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": settings.format,
        }
    }
    if settings.file.path:
        handlers["file"] = {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": settings.file.path,
            "maxBytes": settings.file.max_bytes,
            "backupCount": settings.file.backup_count,
            "formatter": "json",
            "encoding": "utf-8",
        }
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "json": {"()": JsonFormatter},
                "console": {"format": "%(asctime)s %(levelname)-8s %(name)s: %(message)s"},
            },
            "handlers": handlers,
            "root": {"level": settings.level, "handlers": list(handlers)},
            "loggers": {
                **{
                    name: {"level": settings.level, "handlers": [], "propagate": True}
                    for name in _UVICORN_LOGGERS
                },
                "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            },
        }
    )
