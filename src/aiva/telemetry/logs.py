"""stdlib logging configured once: console (JSON lines or text), rotating file, and OTLP."""

from __future__ import annotations

import json
import logging
import logging.config
import time
import traceback
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LogRecord as OtelLogRecord
from opentelemetry.context import get_current
from opentelemetry.instrumentation.log_utils import std_to_otel
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from aiva.context import log_fields_var, request_id_var
from aiva.settings import Settings
from aiva.settings.model import LogsSettings
from aiva.telemetry.exporters import CountingLogExporter, ExportStats, count_drops, otlp_exporter

# The attributes every LogRecord has; anything else on a record is an extra field.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# Extras other libraries attach for their own formatters (uvicorn's ANSI-coloured copy).
_DROPPED_EXTRAS = frozenset({"color_message", "_aiva_fields"})

# uvicorn's loggers go through our handlers; its access log is replaced by aiva.access.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")


def current_ids() -> tuple[str | None, str | None]:
    """The current span's trace id and span id as hex, or Nones outside a span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


_FIELDS_ATTR = "_aiva_fields"


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The request id, the fields bound with log_context, then the record's own extras.

    Computed once per record and kept on it: the console and OTLP handlers both need it.
    """
    cached: dict[str, Any] | None = record.__dict__.get(_FIELDS_ATTR)
    if cached is not None:
        return cached
    fields: dict[str, Any] = {}
    request_id = request_id_var.get()
    if request_id is not None:
        fields["request_id"] = request_id
    bound = log_fields_var.get()
    if bound:
        fields.update(bound)
    for name, value in record.__dict__.items():
        if name not in _RECORD_ATTRS and name not in _DROPPED_EXTRAS:
            fields[name] = value
    record.__dict__[_FIELDS_ATTR] = fields
    return fields


def _timestamp(created: float) -> str:
    # RFC 3339 in UTC with milliseconds; time.strftime is cheaper than a datetime.
    millis = int(created % 1 * 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(created))}.{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: the contract's fields, bound fields, then the record's extras."""

    _encode = json.JSONEncoder(default=str).encode

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_ids()
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record.created),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "trace_id": trace_id,
            "span_id": span_id,
            "request_id": None,
        }
        entry.update(record_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._encode(entry)


_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}


class OtlpLogHandler(logging.Handler):
    """Hands each record to the OpenTelemetry logger provider, carrying the trace context.

    Written by hand instead of using opentelemetry-instrumentation-logging's handler,
    which copies and filters every attribute of every record and looks the OTel
    logger up again per record; this handler does one pass over the record's
    extras (shared with the console formatter's rule) and caches the loggers.
    """

    def __init__(self, logger_provider: LoggerProvider, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._provider = logger_provider
        self._loggers: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        otel_logger = self._loggers.get(record.name)
        if otel_logger is None:
            otel_logger = self._loggers[record.name] = self._provider.get_logger(record.name)
        attributes = {
            k: v if isinstance(v, _PRIMITIVES) else str(v)
            for k, v in record_fields(record).items()
            if v is not None
        }
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            attributes["exception.type"] = type(error).__qualname__
            attributes["exception.message"] = str(error)
            attributes["exception.stacktrace"] = "".join(
                traceback.format_exception(*record.exc_info)
            )
        otel_logger.emit(
            OtelLogRecord(
                timestamp=int(record.created * 1e9),
                context=get_current(),
                severity_text=_SEVERITY_TEXT.get(record.levelname, record.levelname),
                severity_number=std_to_otel(record.levelno),
                body=record.getMessage(),
                attributes=attributes,
            )
        )


# OTLP attribute values must be primitives; anything else is sent as its str(), None not at all.
_PRIMITIVES = (str, bool, int, float)


def build_logger_provider(
    settings: Settings, resource: Resource, stats: ExportStats
) -> LoggerProvider | None:
    """A provider exporting over OTLP, when OTLP logs are on; else None."""
    telemetry = settings.telemetry
    if not (telemetry.logs.otlp and telemetry.otlp.endpoint):
        return None
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    processor = BatchLogRecordProcessor(
        CountingLogExporter(otlp_exporter(telemetry.otlp, "logs"), stats)
    )
    count_drops(processor, stats, "logs")
    provider.add_log_record_processor(processor)
    return provider


def set_level(level: str) -> None:
    """Change the level of every logger aiva configured (hot reload)."""
    logging.getLogger().setLevel(level)
    for name in _UVICORN_LOGGERS:
        logging.getLogger(name).setLevel(level)


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
        handlers["otlp"] = {"()": OtlpLogHandler, "logger_provider": logger_provider}
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
                # httpx logs every request line at INFO, URL and credentials included:
                # the http health check would write a URL's password every round.
                "httpx": {"level": "WARNING"},
                "httpcore": {"level": "WARNING"},
                # The exporters' own complaints must not feed back into the OTLP pipeline.
                "opentelemetry": {"level": "WARNING", "handlers": ["console"], "propagate": False},
            },
        }
    )
