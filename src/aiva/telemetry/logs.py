"""stdlib logging configured once: console (JSON lines or text), rotating file, and OTLP."""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from aiva.context import log_fields_var, request_id_var
from aiva.settings import Settings
from aiva.settings.model import LogsSettings
from aiva.telemetry.exporters import CountingLogExporter, ExportStats, count_drops, log_exporter

# The attributes every LogRecord has; anything else on a record is an extra field.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# Extras other libraries attach for their own formatters (uvicorn's ANSI-coloured copy).
_DROPPED_EXTRAS = frozenset({"color_message"})

# uvicorn's loggers go through our handlers; its access log is replaced by aiva.access.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")


def current_ids() -> tuple[str | None, str | None]:
    """The current span's trace id and span id as hex, or Nones outside a span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: the contract's fields, bound fields, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_ids()
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "trace_id": trace_id,
            "span_id": span_id,
            "request_id": request_id_var.get(),
        }
        entry.update(log_fields_var.get() or {})
        for name, value in record.__dict__.items():
            if name in _RECORD_ATTRS or name in _DROPPED_EXTRAS:
                continue
            entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ContextFilter(logging.Filter):
    """Copy bound fields and the request id onto each record, for the OTLP handler.

    The console formatter reads the contextvars itself; the OTLP handler turns record
    attributes into log attributes, so they must be on the record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        if request_id is not None:
            record.request_id = request_id
        for name, value in (log_fields_var.get() or {}).items():
            setattr(record, name, value)
        return True


def build_logger_provider(
    settings: Settings, resource: Resource, stats: ExportStats
) -> LoggerProvider | None:
    """A provider exporting over OTLP, when OTLP logs are on; else None."""
    telemetry = settings.telemetry
    if not (telemetry.logs.otlp and telemetry.otlp.endpoint):
        return None
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    processor = BatchLogRecordProcessor(CountingLogExporter(log_exporter(telemetry.otlp), stats))
    count_drops(processor, stats, "logs")
    provider.add_log_record_processor(processor)
    return provider


def configure_logging(settings: LogsSettings, logger_provider: LoggerProvider | None) -> None:
    """Configure the root logger and uvicorn's loggers: the one place logging is set up."""
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
    if logger_provider is not None:
        handlers["otlp"] = {
            "()": "opentelemetry.instrumentation.logging.handler.LoggingHandler",
            "logger_provider": logger_provider,
            "filters": ["context"],
        }
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"context": {"()": ContextFilter}},
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
                # The exporters' own complaints must not feed back into the OTLP pipeline.
                "opentelemetry": {"level": "WARNING", "handlers": ["console"], "propagate": False},
            },
        }
    )
