"""The log record outputs: JSON lines (console and file), readable lines and OTLP, with
the request's ids and the record's secrets masked (aiva.telemetry.scrub)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from opentelemetry import trace
from opentelemetry._logs import LogRecord as OtelLogRecord
from opentelemetry.context import Context
from opentelemetry.instrumentation.log_utils import std_to_otel
from opentelemetry.metrics import MeterProvider
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

from aiva.context import request_id_var
from aiva.fast import PLAIN, FastLayer
from aiva.fast.batch import batch_queue, count_drops
from aiva.settings import Settings
from aiva.settings.model import LimitsSettings
from aiva.telemetry.exporters import CountingLogExporter, ExportStats, otlp_exporter
from aiva.telemetry.otlp_target import otlp_target, within
from aiva.telemetry.scrub import ACCESS_LOGGER, RecordScrubber
from aiva.telemetry.sdk_drops import SdkDropCounts

# The access line's fields on OTLP, named by the HTTP semantic conventions; the console
# and the file keep the documented keys. The conventions name no duration attribute
# (the duration is the metric http.server.request.duration, and the span's own
# timestamps, which the line's trace id leads to): duration_ms stays as it is.
_ACCESS_ATTRIBUTES = {
    "http_method": "http.request.method",
    "http_route": "http.route",
    "status_code": "http.response.status_code",
}


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
    """One JSON object a line: the contract's fields, bound fields, then the record's extras.

    `scrubber`: what masks the record's secrets (the built-in patterns by default).
    """

    def __init__(self, *args: Any, scrubber: RecordScrubber | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timestamps = _Timestamps()
        self._scrubber = scrubber or RecordScrubber()

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_ids()
        view = self._scrubber.view(record)
        entry: dict[str, Any] = {
            "timestamp": self._timestamps.format(record.created),
            "level": record.levelname,
            "message": view.message,
            "logger": record.name,
            "trace_id": trace_id,
            "span_id": span_id,
            "request_id": None,
        }
        entry.update(view.fields)
        if view.stacktrace is not None:
            entry["exception"] = _without_last_newline(view.stacktrace)
            left = _left_request(record)
            if left is not None:  # the server's line for an exception a request raised
                if left.span.is_valid:
                    entry["trace_id"] = format(left.span.trace_id, "032x")
                    entry["span_id"] = format(left.span.span_id, "016x")
                if entry["request_id"] is None and left.request_id is not None:
                    entry["request_id"] = self._scrubber.text(left.request_id)
        return _json_line(entry)


class ConsoleFormatter(logging.Formatter):
    """Readable lines (`telemetry.logs.format: console`) of the same scrubbed record."""

    def __init__(self, *args: Any, scrubber: RecordScrubber | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scrubber = scrubber or RecordScrubber()

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, with the scrubbed message and traceback.
        view = self._scrubber.view(record)
        record.message = view.message
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if view.stacktrace is not None:
            line = f"{line}\n{_without_last_newline(view.stacktrace)}"
        if record.stack_info:
            line = f"{line}\n{self._scrubber.text(self.formatStack(record.stack_info))}"
        return line


def _without_last_newline(text: str) -> str:
    """As logging.Formatter.formatException leaves a traceback."""
    return text[:-1] if text.endswith("\n") else text


_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}


@dataclass(frozen=True)
class OtlpLogs:
    """The OTLP log pipeline: the provider (flushed and shut down with the others) and
    the batch processor the logging handler feeds."""

    provider: LoggerProvider
    processor: LogRecordProcessor
    # The settings' limits (telemetry.limits), as the provider's loggers apply them.
    limits: LogRecordLimits = field(default_factory=lambda: log_record_limits(None))
    # The batch processor's own queueing call (the fast layer's `batch_queue`), or None:
    # records go through the SDK Logger's emit.
    enqueue: Callable[[ReadableLogRecord], None] | None = None


# A log record queued for export keeps no reference to the context it was made in
# (the SDK's batch processor drops it the same way): the ids are already taken.
_NO_CONTEXT = Context()


class OtlpLogHandler(logging.Handler):
    """Hands each record to the OTLP batch processor, carrying the trace context.

    Written by hand instead of using opentelemetry-instrumentation-logging's handler,
    which copies and filters every attribute of every record and looks the OTel
    logger up again per record; this handler does one pass over the record's
    extras (the scrubbed view the console formatter uses too). The access line's
    fields are named by the HTTP conventions here (`http.request.method`, ...).

    It also goes past the SDK's `Logger.emit`, which wraps the attributes in a
    BoundedAttributes (a lock and a cleaning pass over values made primitive just
    above) and is copied once more by the batch processor: about 17 µs a record here
    against about 7 µs for building the ReadableLogRecord that processor queues and
    queueing it. Where the SDK hides its queue, the public path is taken instead.
    """

    def __init__(
        self,
        logs: OtlpLogs,
        level: int = logging.NOTSET,
        *,
        scrubber: RecordScrubber | None = None,
    ) -> None:
        super().__init__(level)
        self._logs = logs
        self._scrubber = scrubber or RecordScrubber()
        self._enqueue = logs.enqueue
        # The limits the SDK's loggers apply: a record with more attributes takes the
        # public path, where the SDK drops the excess and counts it; longer string values
        # are cut here as the SDK would (None: no length limit; `text[:None]` is whole).
        limit = logs.limits.max_log_record_attributes
        self._attribute_limit = 128 if limit is None else limit
        self._value_limit = logs.limits.max_log_record_attribute_length
        self._scopes: dict[str, InstrumentationScope] = {}
        self._loggers: dict[str, Any] = {}

    def handle(self, record: logging.LogRecord) -> Any:
        """As logging.Handler.handle, without its lock around `emit`: emit builds new
        objects and hands them to the batch processor, whose queue is thread-safe
        (the lock cost 0.2 to 0.8 µs a record here, min and median of 15 runs)."""
        passed = self.filter(record)
        if isinstance(passed, logging.LogRecord):  # Python 3.12: a filter may replace it
            record = passed
        if passed:
            self.emit(record)
        return passed

    def emit(self, record: logging.LogRecord) -> None:
        view = self._scrubber.view(record)
        limit = self._value_limit
        if record.name == ACCESS_LOGGER:
            attributes = _access_attributes(view.fields, limit)
        else:
            # The values cut in the same pass that makes them attribute values: a second
            # pass cost 0.3 to 0.5 µs a record more, this one nothing measurable.
            attributes = {
                k: v[:limit]
                if isinstance(v, str)
                else v
                if isinstance(v, _PRIMITIVES)
                else _any_value(v, limit)
                for k, v in view.fields.items()
                if v is not None
            }
        left = None
        if record.exc_info and record.exc_info[1] is not None:
            attributes["exception.type"] = type(record.exc_info[1]).__qualname__
            attributes["exception.message"] = _cut(view.exception_message, limit)
            attributes["exception.stacktrace"] = _cut(view.stacktrace, limit)
            left = _left_request(record)
            if left is not None and left.request_id is not None:
                attributes.setdefault("request_id", self._scrubber.text(left.request_id))
        log = OtelLogRecord(  # takes the trace and span ids from the current context
            timestamp=int(record.created * 1e9),
            severity_text=_SEVERITY_TEXT.get(record.levelname, record.levelname),
            severity_number=std_to_otel(record.levelno),
            body=view.message,
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


# A field's value as it is (strings cut at the limit); others through _any_value. A field
# whose value is None is left out (the SDK would send an empty value).
_PRIMITIVES = (str, bool, int, float)


def _any_value(value: Any, limit: int | None) -> Any:
    """A log attribute value as the SDK's attribute cleaning makes it (what its
    LoggingHandler sends): bytes as they are, sequences as arrays and mappings as
    key-value lists (OTLP's AnyValue), cleaned item by item, strings cut at `limit`.
    Anything else is sent as its str(), cut too: the SDK sends an empty value for a type
    without its own str() or repr() (a bare `object()`), and does not cut the str() of
    the others; aiva sends what the console shows, bounded like every string.
    """
    if value is None or isinstance(value, bool | int | float | bytes):
        return value
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, Sequence):
        return tuple(_any_value(item, limit) for item in value)
    if isinstance(value, Mapping):
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            if not key:  # as the SDK: an empty key is dropped
                continue
            if not isinstance(key, str):
                if not _has_own_str(key):  # as the SDK: a key it cannot name is dropped
                    continue
                key = str(key)
            cleaned[key] = _any_value(item, limit)
        return cleaned
    return str(value)[:limit]


def _has_own_str(value: object) -> bool:
    kind = type(value)
    return kind.__str__ is not object.__str__ or kind.__repr__ is not object.__repr__


def _access_attributes(fields: dict[str, Any], limit: int | None = None) -> dict[str, Any]:
    """The access line's attributes: its own fields under the conventions' names, string
    values cut at `limit` (bound `log_context` fields may be long)."""
    return {
        _ACCESS_ATTRIBUTES.get(k, k): v[:limit]
        if isinstance(v, str)
        else v
        if isinstance(v, _PRIMITIVES)
        else _any_value(v, limit)
        for k, v in fields.items()
        if v is not None
    }


def _cut(text: str | None, limit: int | None) -> str | None:
    return text[:limit] if text is not None else None


def build_otlp_logs(
    settings: Settings, resource: Resource, stats: ExportStats, fast: FastLayer = PLAIN
) -> OtlpLogs | None:
    """The OTLP log pipeline, when OTLP logs are on; else None. `fast`: the fast layer's
    hooks in use."""
    telemetry = settings.telemetry
    target = otlp_target(telemetry.otlp, "logs")
    if not telemetry.logs.otlp or target is None:
        return None
    limits = log_record_limits(telemetry.limits)
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False, log_record_limits=limits)
    batch = telemetry.logs.batch
    exporter = CountingLogExporter(
        otlp_exporter(within(target, batch.export_timeout_s), fast), stats, fast
    )

    def build(meter_provider: MeterProvider | None = None) -> BatchLogRecordProcessor:
        return BatchLogRecordProcessor(
            exporter,
            max_queue_size=batch.max_queue_size,
            schedule_delay_millis=batch.schedule_delay_s * 1000,
            max_export_batch_size=min(batch.max_export_batch_size, batch.max_queue_size),
            export_timeout_millis=batch.export_timeout_s * 1000,
            meter_provider=meter_provider,
        )

    if "batch_drop_counts" in fast:
        processor = build()
        count_drops(processor, stats, "logs")
    else:  # the plain pipeline: the SDK's own processor metrics count the drops
        processor = SdkDropCounts(stats, "logs").built(build)
    provider.add_log_record_processor(processor)
    enqueue = batch_queue(processor) if "batch_queue" in fast else None
    return OtlpLogs(provider, processor, limits, enqueue)


def log_record_limits(limits: LimitsSettings | None) -> LogRecordLimits:
    """Every limit given explicitly: LogRecordLimits reads OTEL_* variables for what it is
    not given, and the settings hold those already. The logs' own limits win."""
    unset = LogRecordLimits.UNSET
    if limits is None:
        return LogRecordLimits(unset, unset, 128, unset)
    count = limits.attribute_count if limits.attribute_count is not None else 128
    length = limits.attribute_value_length
    own_count, own_length = limits.logs.attribute_count, limits.logs.attribute_value_length
    return LogRecordLimits(
        max_attributes=count,
        max_attribute_length=unset if length is None else length,
        max_log_record_attributes=own_count if own_count is not None else count,
        max_log_record_attribute_length=(
            own_length if own_length is not None else (unset if length is None else length)
        ),
    )
