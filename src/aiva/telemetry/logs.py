"""The log record outputs: JSON lines (console and file) and OTLP, with the request's ids."""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from opentelemetry import trace
from opentelemetry._logs import LogRecord as OtelLogRecord
from opentelemetry.context import Context
from opentelemetry.instrumentation.log_utils import std_to_otel
from opentelemetry.sdk._logs import (
    LoggerProvider,
    LogRecordLimits,
    LogRecordProcessor,
    ReadableLogRecord,
)
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext

from aiva.context import log_fields_var, request_id_var
from aiva.settings import Settings
from aiva.telemetry.exporters import CountingLogExporter, ExportStats, count_drops, otlp_exporter

# The attributes every LogRecord has; anything else on a record is an extra field.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# Extras other libraries attach for their own formatters (uvicorn's ANSI-coloured copy).
_DROPPED_EXTRAS = frozenset({"color_message", "_aiva_fields"})



def current_ids() -> tuple[str | None, str | None]:
    """The current span's trace id and span id as hex, or Nones outside a span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class _RequestIds(NamedTuple):
    scope: object  # which request noted them
    span: SpanContext
    request_id: str | None


_REQUEST_IDS_ATTR = "_aiva_request_ids"


def note_request_ids(error: BaseException, scope: object, request_id: str | None) -> None:
    """Note the current span and the request id on an exception leaving the request `scope`.

    The server logs that exception ("Exception in ASGI application") once the request's
    span and request id are no longer current; the handlers take the ids from the note.
    The first note of a request is kept: it comes from the innermost aiva app (one mounted
    in another), where the error happened. A note from another request (an exception
    object raised again) is replaced.
    """
    noted = getattr(error, _REQUEST_IDS_ATTR, None)
    if isinstance(noted, _RequestIds) and noted.scope is scope:
        return
    # object.__setattr__: an exception class may refuse new attributes (a frozen dataclass).
    span = trace.get_current_span().get_span_context()
    object.__setattr__(error, _REQUEST_IDS_ATTR, _RequestIds(scope, span, request_id))


def _left_request(record: logging.LogRecord) -> _RequestIds | None:
    """For a record with an exception logged outside any request (no request id, no span):
    the ids noted on the exception when it left a request, else None."""
    error = record.exc_info[1] if record.exc_info else None
    noted = getattr(error, _REQUEST_IDS_ATTR, None)
    if (
        not isinstance(noted, _RequestIds)
        or request_id_var.get() is not None
        or trace.get_current_span().get_span_context().is_valid
    ):
        return None
    return noted


_FIELDS_ATTR = "_aiva_fields"


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The request id, the fields bound with log_context, then the record's own extras.

    Computed once per record and kept on it: the console and OTLP handlers both need it.
    """
    cached: dict[str, Any] | None = record.__dict__.get(_FIELDS_ATTR)
    if cached is not None:
        return cached
    fields = _context_fields()
    for name, value in record.__dict__.items():
        if name not in _RECORD_ATTRS and name not in _DROPPED_EXTRAS:
            fields[name] = value
    record.__dict__[_FIELDS_ATTR] = fields
    return fields


def _context_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    request_id = request_id_var.get()
    if request_id is not None:
        fields["request_id"] = request_id
    bound = log_fields_var.get()
    if bound:
        fields.update(bound)
    return fields


class _Timestamps:
    """RFC 3339 in UTC with milliseconds, the seconds part formatted once a second."""

    def __init__(self) -> None:
        self._last: tuple[int, str] = (-1, "")  # replaced whole: safe across threads

    def format(self, created: float) -> str:
        second = int(created)
        last_second, prefix = self._last
        if second != last_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._last = (second, prefix)
        return f"{prefix}.{int((created - second) * 1000):03d}Z"


def _like_json(value: Any) -> Any:
    """What `json.dumps(default=str)` writes for what orjson leaves to its default:
    float subclasses (numpy's) as numbers, tuple subclasses (named tuples) as arrays,
    dataclasses, datetimes and everything else unknown as their str()."""
    if isinstance(value, float):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value)


# orjson writes the same values as the stdlib encoder with default=str, with three
# differences: NaN and infinities become null (valid JSON, where json writes NaN),
# a plain Enum member is written as its value (json writes str(member)), and text
# is written as UTF-8 rather than \u escapes.
_ORJSON_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)
_fallback_encode = json.JSONEncoder(
    default=_like_json, separators=(",", ":"), ensure_ascii=False
).encode


def _json_line(entry: dict[str, Any]) -> str:
    try:
        return orjson.dumps(entry, default=_like_json, option=_ORJSON_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError):
        # What orjson refuses (an int over 64 bits, nesting past its limit): the stdlib
        # encoder, written the same way.
        return _fallback_encode(entry)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: the contract's fields, bound fields, then the record's extras."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timestamps = _Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_ids()
        entry: dict[str, Any] = {
            "timestamp": self._timestamps.format(record.created),
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
            left = _left_request(record)
            if left is not None:  # the server's line for an exception a request raised
                if left.span.is_valid:
                    entry["trace_id"] = format(left.span.trace_id, "032x")
                    entry["span_id"] = format(left.span.span_id, "016x")
                if entry["request_id"] is None:
                    entry["request_id"] = left.request_id
        return _json_line(entry)


_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}


@dataclass(frozen=True)
class OtlpLogs:
    """The OTLP log pipeline: the provider (flushed and shut down with the others) and
    the batch processor the logging handler feeds."""

    provider: LoggerProvider
    processor: LogRecordProcessor


# A log record queued for export keeps no reference to the context it was made in
# (the SDK's batch processor drops it the same way): the ids are already taken.
_NO_CONTEXT = Context()


class OtlpLogHandler(logging.Handler):
    """Hands each record to the OTLP batch processor, carrying the trace context.

    Written by hand instead of using opentelemetry-instrumentation-logging's handler,
    which copies and filters every attribute of every record and looks the OTel
    logger up again per record; this handler does one pass over the record's
    extras (shared with the console formatter's rule).

    It also goes past the SDK's `Logger.emit`, which wraps the attributes in a
    BoundedAttributes (a lock and a cleaning pass over values made primitive just
    above) and is copied once more by the batch processor: about 17 µs a record here
    against about 7 µs for building the ReadableLogRecord that processor queues and
    queueing it. Where the SDK hides its queue, the public path is taken instead.
    """

    def __init__(self, logs: OtlpLogs, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._logs = logs
        self._enqueue = queue_of(logs.processor)
        # The limit the SDK's loggers apply: a record over it takes the public path,
        # where the SDK drops the excess and counts it.
        self._attribute_limit = LogRecordLimits().max_attributes or 128
        self._scopes: dict[str, InstrumentationScope] = {}
        self._loggers: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        attributes = {
            k: v if isinstance(v, _PRIMITIVES) else str(v)
            for k, v in record_fields(record).items()
            if v is not None
        }
        left = None
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            attributes["exception.type"] = type(error).__qualname__
            attributes["exception.message"] = str(error)
            attributes["exception.stacktrace"] = "".join(
                traceback.format_exception(*record.exc_info)
            )
            left = _left_request(record)
            if left is not None and left.request_id is not None:
                attributes.setdefault("request_id", left.request_id)
        log = OtelLogRecord(  # takes the trace and span ids from the current context
            timestamp=int(record.created * 1e9),
            severity_text=_SEVERITY_TEXT.get(record.levelname, record.levelname),
            severity_number=std_to_otel(record.levelno),
            body=record.getMessage(),
            attributes=attributes,
        )
        if left is not None and left.span.is_valid:  # the server's line for a request's error
            log.trace_id = left.span.trace_id
            log.span_id = left.span.span_id
            log.trace_flags = left.span.trace_flags
        if self._enqueue is None or len(attributes) > self._attribute_limit:
            self._logger(record.name).emit(log)  # the SDK applies its limits there
            return
        log.context = _NO_CONTEXT
        self._enqueue(
            ReadableLogRecord(log, self._logs.provider.resource, self._scope(record.name))
        )

    def _scope(self, name: str) -> InstrumentationScope:
        scope = self._scopes.get(name)
        if scope is None:  # as provider.get_logger(name) names it
            scope = self._scopes[name] = InstrumentationScope(name)
        return scope

    def _logger(self, name: str) -> Any:
        otel_logger = self._loggers.get(name)
        if otel_logger is None:
            otel_logger = self._loggers[name] = self._logs.provider.get_logger(name)
        return otel_logger


def queue_of(processor: LogRecordProcessor) -> Callable[[ReadableLogRecord], None] | None:
    """A batch processor's own queueing call; None for other processors, or where this
    SDK hides it."""
    emit = getattr(getattr(processor, "_batch_processor", None), "emit", None)
    return emit if callable(emit) else None


# OTLP attribute values must be primitives; anything else is sent as its str(), None not at all.
_PRIMITIVES = (str, bool, int, float)


def build_otlp_logs(settings: Settings, resource: Resource, stats: ExportStats) -> OtlpLogs | None:
    """The OTLP log pipeline, when OTLP logs are on; else None."""
    telemetry = settings.telemetry
    if not (telemetry.logs.otlp and telemetry.otlp.endpoint):
        return None
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    processor = BatchLogRecordProcessor(
        CountingLogExporter(otlp_exporter(telemetry.otlp, "logs"), stats)
    )
    count_drops(processor, stats, "logs")
    provider.add_log_record_processor(processor)
    return OtlpLogs(provider, processor)
