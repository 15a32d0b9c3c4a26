"""aiva's OTLP log records against the public SDK path's, byte for byte (issue #14).

Every logging call here reaches two handlers on the same logger: aiva's OtlpLogHandler
(with the fast layer's `batch_queue`, and on the plain path) and the SDK's own
`LoggingHandler` (opentelemetry.sdk._logs) into a provider without limits. The SDK's
record is then turned into what aiva documents, one listed difference at a time
(`documented`), and emitted through the public `Logger.emit` of a provider with aiva's
limits, which applies them as the SDK does. Both are encoded with the SDK's OTLP encoder
and compared as bytes. The end-to-end check (a handler's record reaching a real rotel
with its trace and span ids) is tests/telemetry/test_otlp.py's
test_signals_reach_the_collector.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import enum
import logging
import threading
import uuid
import warnings
from collections import namedtuple
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry._logs import LogRecord as OtelLogRecord
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import (
    LoggerProvider,
    LoggingHandler,
    LogRecordDroppedAttributesWarning,
    LogRecordLimits,
    ReadableLogRecord,
)
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from aiva import log_context
from aiva.context import request_id_var
from aiva.fast.batch import batch_queue
from aiva.settings.model import LimitsSettings, LogLimitsSettings, SpanLimitsSettings
from aiva.telemetry.logs import OtlpLogHandler, OtlpLogs, log_record_limits
from aiva.web.middleware import AccessLog

RESOURCE = Resource({"service.name": "log-records-test"})
# The SDK handler's reference records are made without limits: aiva's are applied once
# the documented differences are (as Logger.emit applies them to what aiva sends).
_NO_LIMITS = LogRecordLimits(
    LogRecordLimits.UNSET, LogRecordLimits.UNSET, LogRecordLimits.UNSET, LogRecordLimits.UNSET
)
# opentelemetry-instrumentation-logging's default (OTEL_PYTHON_LOG_CODE_ATTRIBUTES off),
# which aiva follows: no source location on a record (the SDK's deprecated handler always
# adds it).
_CODE_ATTRIBUTES = ("code.file.path", "code.function.name", "code.line.number")
_EXCEPTION_ATTRIBUTES = ("exception.type", "exception.message", "exception.stacktrace")
_ACCESS_NAMES = {
    "http_method": "http.request.method",
    "http_route": "http.route",
    "status_code": "http.response.status_code",
}


def _limits(count: int | None = None, length: int | None = None) -> LimitsSettings:
    spans = SpanLimitsSettings(None, None, None, None, None, None)
    return LimitsSettings(length, count, spans, LogLimitsSettings(None, None))


def _pipeline(limits: LogRecordLimits) -> tuple[LoggerProvider, BatchLogRecordProcessor, Any]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE, shutdown_on_exit=False, log_record_limits=limits)
    processor = BatchLogRecordProcessor(exporter, schedule_delay_millis=60_000)
    provider.add_log_record_processor(processor)
    return provider, processor, exporter


@dataclass
class Expected:
    """What aiva adds or changes on one record, against the SDK handler's."""

    # request_id, then the log_context fields: before the record's extras (SPEC: bound
    # to every log record).
    first: dict[str, Any] = field(default_factory=dict)
    # Values aiva sends otherwise: masked secrets, the str() of an object without its own.
    replaced: dict[str, Any] = field(default_factory=dict)
    # Extras aiva leaves out: a None value (the SDK sends an empty value), uvicorn's
    # `color_message` (its ANSI copy of the message).
    left_out: frozenset[str] = frozenset()
    body: str | None = None  # a masked message
    exception: BaseException | None = None


class Both:
    """aiva's handler and the SDK's on one logger; `compare` checks every record."""

    def __init__(self, logger: logging.Logger, limits: LimitsSettings | None, fast: bool):
        self.logger = logger
        self.limits = log_record_limits(limits)
        ours = _pipeline(self.limits)
        theirs = _pipeline(_NO_LIMITS)
        self.reference_provider, _, _ = reference = _pipeline(self.limits)
        self._pipelines = (ours, theirs, reference)
        enqueue = batch_queue(ours[1]) if fast else None
        self.ours = OtlpLogHandler(OtlpLogs(ours[0], ours[1], self.limits, enqueue))
        with warnings.catch_warnings():  # deprecated for opentelemetry-instrumentation-logging's
            warnings.simplefilter("ignore", DeprecationWarning)
            self.theirs = LoggingHandler(logger_provider=theirs[0])
        self.expected: dict[str, Expected] = {}  # by the SDK's body

    def expect(self, body: str, expected: Expected) -> None:
        self.expected[body] = expected

    def finished(self) -> tuple[list[ReadableLogRecord], list[ReadableLogRecord]]:
        """(aiva's records, the documented SDK records), in the same order."""
        ours, theirs, reference = self._pipelines
        for provider, _, _ in (ours, theirs):
            assert provider.force_flush(5000)
        made, sdk_made = ours[2].get_finished_logs(), theirs[2].get_finished_logs()
        assert len(made) == len(sdk_made)
        # Threads may interleave between the two handlers: paired by time and body.
        key = lambda r: (r.log_record.timestamp, str(r.log_record.body))  # noqa: E731
        made, sdk_made = sorted(made, key=key), sorted(sdk_made, key=key)
        for record in sdk_made:
            self._emit_documented(record)
        assert reference[0].force_flush(5000)
        documented = sorted(reference[2].get_finished_logs(), key=key)
        return list(made), documented

    def compare(self) -> list[ReadableLogRecord]:
        made, documented = self.finished()
        for ours, expected in zip(made, documented, strict=True):
            for record in (ours, expected):
                # The time each handler saw the record: read from the clock by each.
                record.log_record.observed_timestamp = 0
            assert (
                encode_logs([ours]).SerializeToString()
                == encode_logs([expected]).SerializeToString()
            ), _difference(ours, expected)
        return made

    def _emit_documented(self, sdk: ReadableLogRecord) -> None:
        """The SDK handler's record with aiva's documented differences, through the public
        Logger.emit of a provider with aiva's limits."""
        record = sdk.log_record
        expected = self.expected.get(str(record.body), Expected())
        attributes = dict(record.attributes or {})
        exception = {k: attributes.pop(k) for k in _EXCEPTION_ATTRIBUTES if k in attributes}
        for name in (*_CODE_ATTRIBUTES, *expected.left_out):
            attributes.pop(name, None)
        replaced = {k: v for k, v in expected.replaced.items() if k not in _EXCEPTION_ATTRIBUTES}
        attributes = {**expected.first, **attributes, **replaced}
        if sdk.instrumentation_scope and sdk.instrumentation_scope.name == "aiva.access":
            # The access line's own fields under the HTTP semantic conventions' names.
            attributes = {_ACCESS_NAMES.get(k, k): v for k, v in attributes.items()}
        if expected.exception is not None:
            error = expected.exception
            # exception.type: the class's qualified name (the SDK handler: its bare
            # __name__; the SDK's span events: module and qualified name). exception.message:
            # str(error), as on the span event and the console (the SDK handler:
            # str(args[0]), and none for an exception without args). The traceback as the
            # SDK handler's, its secrets masked.
            exception = {
                "exception.type": type(error).__qualname__,
                "exception.message": str(error),
                "exception.stacktrace": exception["exception.stacktrace"],
            }
            exception.update(
                {k: v for k, v in expected.replaced.items() if k in _EXCEPTION_ATTRIBUTES}
            )
        attributes.update(exception)
        span = NonRecordingSpan(
            SpanContext(record.trace_id or 0, record.span_id or 0, False, record.trace_flags)
        )
        self.reference_provider.get_logger(
            sdk.instrumentation_scope.name if sdk.instrumentation_scope else ""
        ).emit(
            OtelLogRecord(
                timestamp=record.timestamp,
                context=trace.set_span_in_context(span),
                severity_text=record.severity_text,
                severity_number=record.severity_number,
                body=expected.body if expected.body is not None else record.body,
                attributes=attributes,
            )
        )

    def shutdown(self) -> None:
        for provider, _, _ in self._pipelines:
            provider.shutdown()


def _difference(ours: ReadableLogRecord, expected: ReadableLogRecord) -> str:
    """What tells the two apart, for the failure's message."""
    lines = []
    for name in ("body", "trace_id", "span_id", "trace_flags", "severity_text", "timestamp"):
        a, b = getattr(ours.log_record, name), getattr(expected.log_record, name)
        if a != b:
            lines.append(f"{name}: {a!r} != {b!r}")
    a_attrs, b_attrs = (
        dict(ours.log_record.attributes or {}),
        dict(expected.log_record.attributes or {}),
    )
    if list(a_attrs.items()) != list(b_attrs.items()):
        lines.append(f"attributes: {a_attrs!r}\n  expected: {b_attrs!r}")
    if ours.dropped_attributes != expected.dropped_attributes:
        lines.append(f"dropped: {ours.dropped_attributes} != {expected.dropped_attributes}")
    return "\n".join(lines) or "the same fields, other bytes"


_serial = iter(range(1_000_000))


@pytest.fixture(params=[True, False], ids=["batch_queue", "plain"])
def both(request: pytest.FixtureRequest) -> Iterator[Callable[..., Both]]:
    """`both(limits=None, name=None)`: the two handlers on a logger of their own."""
    made: list[tuple[Both, logging.Logger]] = []

    def make(limits: LimitsSettings | None = None, name: str | None = None) -> Both:
        logger = logging.getLogger(name or f"test.log_records.{next(_serial)}")
        pair = Both(logger, limits, fast=request.param)
        # The SDK's first: it sees the record as the service made it (aiva's handler
        # notes its scrubbed view on the record).
        logger.addHandler(pair.theirs)
        logger.addHandler(pair.ours)
        made.append((pair, logger))
        return pair

    saved = [(lg, lg.level, lg.propagate) for lg in (logging.getLogger("aiva.access"),)]
    yield make
    for pair, logger in made:
        logger.removeHandler(pair.ours)
        logger.removeHandler(pair.theirs)
        pair.shutdown()
    for lg, level, propagate in saved:
        lg.setLevel(level)
        lg.propagate = propagate


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[logging.Logger]:
    """The logger at DEBUG, its records kept to its own handlers."""
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger
    finally:
        logger.setLevel(level)
        logger.propagate = propagate


_tracer = TracerProvider().get_tracer("test.log_records")


def test_plain_and_formatted_messages_with_and_without_a_span(both: Callable[..., Both]) -> None:
    pair = both()
    with _quiet(pair.logger) as logger:
        logger.warning("no span here")
        logger.info("processed %d items in %.1f s", 12, 0.5)
        with _tracer.start_as_current_span("request"):
            logger.error("in the span: %s", "failed")
            logger.critical("fatal %(what)s", {"what": "mapping args"})
            logger.debug("debug")
    made = pair.compare()
    by_body = {r.log_record.body: r.log_record for r in made}
    assert by_body["no span here"].trace_id == 0 and by_body["no span here"].span_id == 0
    inside = by_body["in the span: failed"]
    assert inside.trace_id != 0 and inside.span_id != 0
    assert (by_body["fatal mapping args"].severity_text, inside.severity_text) == ("FATAL", "ERROR")


class _Float(float):  # as numpy's float64 is
    pass


class _Colour(enum.Enum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


_Point = namedtuple("_Point", "x y")


@dataclasses.dataclass
class _Order:
    id: int


class _Opaque:
    """No __str__ or __repr__ of its own."""


def test_extras_of_every_type(both: Callable[..., Both]) -> None:
    pair = both()
    opaque = _Opaque()
    extra = {
        "text": "plain",
        "count": 3,
        "ratio": 0.25,
        "flag": True,
        "big": 2**62,
        "raw": b"\x00\xff",
        "items": [1, "two", 3.0, None, [4, 5]],
        "pair": (1, 2),
        "point": _Point(1, 2),
        "mapping": {"a": 1, "nested": {"b": [True, None]}, 7: "int key", "": "empty key"},
        "tags": frozenset({"x"}),
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "amount": decimal.Decimal("1.50"),
        "uid": uuid.UUID(int=7),
        "colour": _Colour.RED,
        "level": _Level.HIGH,
        "numpy_like": _Float(1.5),
        "order": _Order(7),
        "nothing": None,
        "opaque": opaque,
        "color_message": "\x1b[32mcoloured\x1b[0m",
    }
    pair.expect(
        "with extras",
        Expected(
            replaced={"opaque": str(opaque)},
            left_out=frozenset({"nothing", "color_message"}),
        ),
    )
    with _quiet(pair.logger) as logger, _tracer.start_as_current_span("request"):
        logger.info("with extras", extra=extra)
    [record] = pair.compare()
    attributes = dict(record.log_record.attributes or {})
    assert attributes["mapping"] == {
        "a": 1,
        "nested": {"b": (True, None)},
        "7": "int key",
    }
    assert attributes["items"] == (1, "two", 3.0, None, (4, 5))
    assert attributes["raw"] == b"\x00\xff"


def test_log_context_fields_and_the_request_id(both: Callable[..., Both]) -> None:
    pair = both()
    token = request_id_var.set("req-42")
    try:
        with (
            _quiet(pair.logger) as logger,
            _tracer.start_as_current_span("request"),
            log_context(user_id=7, component="orders", session={"id": "s-1"}),
        ):
            logger.info("bound", extra={"order_id": 42})
            with log_context(component="billing"):
                logger.info("rebound")
    finally:
        request_id_var.reset(token)
    for body, component in (("bound", "orders"), ("rebound", "billing")):
        first = {"request_id": "req-42", "user_id": 7, "component": component}
        pair.expect(body, Expected(first={**first, "session": {"id": "s-1"}}))
    made = pair.compare()
    assert [list(r.log_record.attributes or {})[:4] for r in made] == [
        ["request_id", "user_id", "component", "session"]
    ] * 2


def test_secrets_are_masked_and_nothing_else_differs(both: Callable[..., Both]) -> None:
    pair = both()
    pair.expect(
        "connecting to postgres://app:s3cret@db/x",
        Expected(
            body="connecting to postgres://app:****@db/x",
            replaced={
                "password": "****",
                "note": "token=****",
                "headers": {"Authorization": "****"},
            },
        ),
    )
    with _quiet(pair.logger) as logger:
        logger.info(
            "connecting to %s",
            "postgres://app:s3cret@db/x",
            extra={
                "password": "hunter2",
                "note": "token=abc123",
                "headers": {"Authorization": "Bearer abcdefghijkl"},
                "safe": "nothing secret",
            },
        )
    pair.compare()


@pytest.mark.parametrize(("count", "length"), [(None, None), (5, None), (None, 8), (3, 4)], ids=str)
def test_records_over_the_attribute_limits(
    both: Callable[..., Both], count: int | None, length: int | None
) -> None:
    pair = both(_limits(count, length))
    wide = {f"field_{i}": f"value number {i}" for i in range(200)}
    with _quiet(pair.logger) as logger, warnings.catch_warnings():
        # The SDK's notice of dropped attributes (both paths, and the documented records').
        warnings.simplefilter("ignore", LogRecordDroppedAttributesWarning)
        logger.info("wide", extra=wide)
        logger.info(
            "long values",
            extra={"long": "x" * 50, "items": ["y" * 50, 1], "mapping": {"k": "z" * 50}},
        )
        made = pair.compare()
    kept = 128 if count is None else count
    by_body = {r.log_record.body: r for r in made}
    assert len(by_body["wide"].log_record.attributes or {}) == kept
    assert by_body["wide"].dropped_attributes == 200 - kept
    if length is not None:
        long = dict(by_body["long values"].log_record.attributes or {})
        assert all(len(v) <= length for v in long.values() if isinstance(v, str))


class _Outer:
    class NestedError(Exception):
        pass


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:  # noqa: BLE001 - handed back to be logged
        return caught


def test_exceptions_with_their_tracebacks(both: Callable[..., Both]) -> None:
    pair = both(_limits(length=400))
    errors = {
        "plain": _raised(ValueError("bad value")),
        "nested class": _raised(_Outer.NestedError("inner", 2)),
        "no args": _raised(KeyError()),
        "key": _raised(KeyError("missing")),
    }
    with _quiet(pair.logger) as logger, _tracer.start_as_current_span("request"):
        for name, error in errors.items():
            pair.expect(f"failed: {name}", Expected(exception=error))
            logger.error("failed: %s", name, exc_info=error)
        try:
            raise RuntimeError("cannot reach postgres://app:s3cret@db/x")
        except RuntimeError as error:
            logged = error
            logger.exception("unhandled")
        pair.expect(
            "unhandled",
            Expected(
                exception=logged,
                replaced={
                    "exception.message": "cannot reach postgres://app:****@db/x",
                    "exception.stacktrace": _masked_traceback(logged),
                },
            ),
        )
        logger.info("no exception after all", exc_info=True)  # outside an except: none
    made = pair.compare()
    attributes = {r.log_record.body: dict(r.log_record.attributes or {}) for r in made}
    assert attributes["failed: nested class"]["exception.type"] == "_Outer.NestedError"
    assert attributes["failed: no args"]["exception.message"] == ""
    assert "Traceback (most recent call last)" in attributes["unhandled"]["exception.stacktrace"]
    assert not any(k.startswith("exception.") for k in attributes["no exception after all"])


def _masked_traceback(error: BaseException) -> str:
    import traceback

    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return text.replace("s3cret", "****")


def test_records_from_threads_and_concurrent_tasks(both: Callable[..., Both]) -> None:
    pair = both()
    logger = pair.logger

    def in_thread(n: int) -> None:
        with log_context(worker=n), _tracer.start_as_current_span(f"thread {n}"):
            for i in range(5):
                logger.info("thread %d record %d", n, i, extra={"i": i})

    async def task(n: int) -> None:
        token = request_id_var.set(f"req-{n}")
        try:
            with log_context(task=n), _tracer.start_as_current_span(f"task {n}"):
                for i in range(5):
                    logger.info("task %d record %d", n, i)
                    await asyncio.sleep(0)
        finally:
            request_id_var.reset(token)

    async def tasks() -> None:
        await asyncio.wait_for(asyncio.gather(*(task(n) for n in range(8))), timeout=10)

    with _quiet(logger):
        threads = [threading.Thread(target=in_thread, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads)
        asyncio.run(tasks())
    for n in range(4):
        for i in range(5):
            pair.expect(f"thread {n} record {i}", Expected(first={"worker": n}))
    for n in range(8):
        for i in range(5):
            pair.expect(
                f"task {n} record {i}", Expected(first={"request_id": f"req-{n}", "task": n})
            )
    made = pair.compare()
    assert len(made) == 4 * 5 + 8 * 5
    # Each task's records carry that task's span.
    spans: dict[str, set[int]] = {}
    for record in made:
        spans.setdefault(str(record.log_record.body).split(" record")[0], set()).add(
            record.log_record.span_id or 0
        )
    assert all(len(ids) == 1 and 0 not in ids for ids in spans.values())
    assert len({next(iter(ids)) for ids in spans.values()}) == 12


def test_the_access_line_uses_the_http_conventions_names(both: Callable[..., Both]) -> None:
    pair = both(name="aiva.access")
    access = AccessLog()
    token = request_id_var.set("req-1")
    try:
        with _quiet(pair.logger), _tracer.start_as_current_span("GET /items/{id}"):
            access.write("GET", "/items/{id}", 200, 0.0123, quiet=False)
    finally:
        request_id_var.reset(token)
    pair.expect("GET /items/{id} 200", Expected(first={"request_id": "req-1"}))
    [record] = pair.compare()
    assert dict(record.log_record.attributes or {}) == {
        "request_id": "req-1",
        "http.request.method": "GET",
        "http.route": "/items/{id}",
        "http.response.status_code": 200,
        "duration_ms": 12.3,
    }


def test_the_trace_flags_of_an_unsampled_span(both: Callable[..., Both]) -> None:
    pair = both()
    context = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0))
    with _quiet(pair.logger) as logger, trace.use_span(NonRecordingSpan(context)):
        logger.info("unsampled")
    [record] = pair.compare()
    assert (record.log_record.trace_id, record.log_record.trace_flags) == (0x1234, 0)
