"""Log records: JSON console lines, the rotating file, bound fields."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry._logs import LogRecord as OtelLogRecord
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import LoggerProvider, LogRecordDroppedAttributesWarning
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanContext

from aiva.context import request_id_var
from aiva.fast.batch import batch_queue
from aiva.telemetry.logs import (
    JsonFormatter,
    OtlpLogHandler,
    OtlpLogs,
    note_request_ids,
)
from aiva.web.middleware import AccessLog
from infra.rotel import Rotel
from infra.service import AivaService

CONTRACT_FIELDS = {"timestamp", "level", "message", "logger", "trace_id", "span_id", "request_id"}


def test_console_lines_are_json_with_trace_context(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = aiva_service()
    with service.client() as client:
        client.get("/api/demo/work", headers={"X-Request-ID": "req-7"})
    service.terminate()
    lines = [line for line in service.log_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line parses
    for record in records:
        assert set(record) >= CONTRACT_FIELDS
    [processed] = [r for r in records if r["message"].startswith("processed ")]
    assert processed["request_id"] == "req-7"
    assert processed["component"] == "demo"
    assert len(processed["trace_id"]) == 32 and len(processed["span_id"]) == 16
    assert processed["timestamp"].endswith("Z")


def test_the_servers_error_line_carries_the_requests_ids(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    # uvicorn logs an unhandled exception after the request's span and request id
    # are gone; the ids noted on the exception must still reach both outputs.
    collector = rotel()
    service = aiva_service(
        env={
            "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
            "AIVA_TELEMETRY__OTLP__PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
        }
    )
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with service.client() as client:
        response = client.get(
            "/api/demo/fail",
            headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "X-Request-ID": "boom-1"},
        )
    assert response.status_code == 500
    [server] = collector.wait_for_spans(lambda s: s["name"] == "GET /api/demo/fail")
    assert server["trace_id"] == trace_id

    [otlp] = collector.wait_for_log_records(
        lambda r: str(r["body"]).startswith("Exception in ASGI application")
    )
    assert (otlp["trace_id"], otlp["span_id"]) == (trace_id, server["span_id"])
    assert otlp["attributes"]["request_id"] == "boom-1"
    assert otlp["attributes"]["exception.message"] == "demo failure"

    service.terminate()
    [line] = [
        entry
        for entry in map(json.loads, filter(str.strip, service.log_text().splitlines()))
        if entry["message"].startswith("Exception in ASGI application")
    ]
    assert line["logger"] == "uvicorn.error"
    assert (line["trace_id"], line["span_id"]) == (trace_id, server["span_id"])
    assert line["request_id"] == "boom-1"
    assert "RuntimeError: demo failure" in line["exception"]


def test_rotating_file_gets_every_record(
    aiva_service: Callable[..., AivaService], tmp_path: Path
) -> None:
    log_file = tmp_path / "aiva.jsonl"
    service = aiva_service(
        env={
            "AIVA_TELEMETRY__LOGS__FILE__PATH": str(log_file),
            "AIVA_TELEMETRY__LOGS__FILE__MAX_BYTES": "4000",
            "AIVA_TELEMETRY__LOGS__FILE__BACKUP_COUNT": "2",
        }
    )
    with service.client() as client:
        for item in range(60):
            client.get(f"/api/demo/items/{item}")
    service.terminate()
    files = sorted(tmp_path.glob("aiva.jsonl*"))
    assert [f.name for f in files] == ["aiva.jsonl", "aiva.jsonl.1", "aiva.jsonl.2"]
    for path in files:
        assert path.stat().st_size <= 4000
        for line in path.read_text().splitlines():
            assert set(json.loads(line)) >= CONTRACT_FIELDS


def test_formatter_keeps_extras_and_exceptions() -> None:
    try:
        raise KeyError("missing")
    except KeyError as error:
        record = logging.LogRecord(
            "svc",
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("x",),
            (KeyError, error, error.__traceback__),
        )
    record.order_id = 42
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed x"
    assert entry["order_id"] == 42
    assert entry["level"] == "ERROR"
    assert "KeyError: 'missing'" in entry["exception"]
    assert entry["trace_id"] is None  # outside any span


def _error_leaving_a_request(request_id: str) -> tuple[RuntimeError, SpanContext]:
    """An exception noted as the request middleware notes it, and the span it left."""
    error = RuntimeError("failed")
    with TracerProvider().get_tracer("test").start_as_current_span("GET /fail") as span:
        token = request_id_var.set(request_id)
        scope: dict[str, object] = {}
        try:
            note_request_ids(error, scope, request_id)
            note_request_ids(error, scope, "an outer app's id")  # the first note is kept
        finally:
            request_id_var.reset(token)
    return error, span.get_span_context()


def _error_record(error: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        "uvicorn.error",
        logging.ERROR,
        __file__,
        1,
        "Exception in ASGI application\n",
        None,
        (type(error), error, error.__traceback__),
    )


def test_an_error_logged_after_its_request_carries_the_requests_ids() -> None:
    error, span = _error_leaving_a_request("req-9")
    entry = json.loads(JsonFormatter().format(_error_record(error)))
    assert entry["trace_id"] == format(span.trace_id, "032x")
    assert entry["span_id"] == format(span.span_id, "016x")
    assert entry["request_id"] == "req-9"

    exporter, provider, processor = _in_memory_pipeline()
    OtlpLogHandler(OtlpLogs(provider, processor)).emit(_error_record(error))
    assert provider.force_flush(5000)
    [queued] = exporter.get_finished_logs()
    log = queued.log_record
    assert (log.trace_id, log.span_id, log.trace_flags) == (
        span.trace_id,
        span.span_id,
        span.trace_flags,
    )
    assert (log.attributes or {})["request_id"] == "req-9"
    provider.shutdown()


def test_an_error_logged_inside_another_request_keeps_that_requests_ids() -> None:
    error, _ = _error_leaving_a_request("req-9")
    token = request_id_var.set("req-10")
    try:
        entry = json.loads(JsonFormatter().format(_error_record(error)))
    finally:
        request_id_var.reset(token)
    assert (entry["request_id"], entry["trace_id"]) == ("req-10", None)
    # An exception object raised again in another request is noted afresh.
    note_request_ids(error, {}, "req-11")
    assert json.loads(JsonFormatter().format(_error_record(error)))["request_id"] == "req-11"


class _Opaque:
    def __str__(self) -> str:
        return "opaque thing"


def test_formatter_writes_any_extra_value() -> None:
    record = logging.LogRecord("svc", logging.INFO, __file__, 1, "m", None, None)
    record.obj = _Opaque()
    record.huge = 2**70  # past 64 bits: orjson refuses it, the stdlib encoder does not
    entry = json.loads(JsonFormatter().format(record))
    assert entry["obj"] == "opaque thing"
    assert entry["huge"] == 2**70
    plain = logging.LogRecord("svc", logging.INFO, __file__, 1, "m", None, None)
    plain.obj, plain.huge = _Opaque(), 1
    entry = json.loads(JsonFormatter().format(plain))
    assert (entry["obj"], entry["huge"]) == ("opaque thing", 1)


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_796_000_000.9996, "2026-11-30T00:53:20.999Z"),
        (1_796_000_001.0, "2026-11-30T00:53:21.000Z"),
        (1_796_000_001.25, "2026-11-30T00:53:21.250Z"),
    ],
)
def test_timestamps_are_rfc3339_utc_milliseconds(created: float, expected: str) -> None:
    record = logging.LogRecord("svc", logging.INFO, __file__, 1, "m", None, None)
    formatter = JsonFormatter()
    record.created = created - 1  # a cached second before must not leak into the next
    formatter.format(record)
    record.created = created
    assert json.loads(formatter.format(record))["timestamp"] == expected


def _in_memory_pipeline() -> tuple[
    InMemoryLogRecordExporter, LoggerProvider, BatchLogRecordProcessor
]:
    """An SDK log pipeline into memory: what the OTLP handler feeds, minus the network."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(
        resource=Resource({"service.name": "logs-test"}), shutdown_on_exit=False
    )
    processor = BatchLogRecordProcessor(exporter)
    provider.add_log_record_processor(processor)
    return exporter, provider, processor


@pytest.mark.parametrize("fast", [True, False], ids=["batch_queue", "plain"])
def test_otlp_handler_queues_what_the_sdk_logger_would(fast: bool) -> None:
    # With the fast layer's batch_queue the handler bypasses the SDK's Logger.emit for
    # speed; what reaches the exporter must be the record the public path makes
    # (observed time aside), and the plain path's the same.
    exporter, provider, processor = _in_memory_pipeline()
    enqueue = batch_queue(processor) if fast else None
    handler = OtlpLogHandler(OtlpLogs(provider, processor, enqueue=enqueue))
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request"):
        record = logging.LogRecord(
            "svc.orders", logging.WARNING, __file__, 1, "low %s", ("stock",), None
        )
        record.order_id = 42
        record.note = None  # None is left out
        record.obj = object()  # anything else goes as its str()
        handler.emit(record)
        provider.get_logger("svc.orders").emit(
            OtelLogRecord(
                timestamp=int(record.created * 1e9),
                severity_text="WARN",
                severity_number=SeverityNumber.WARN,
                body="low stock",
                attributes={"order_id": 42, "obj": str(record.obj)},
            )
        )
    assert provider.force_flush(5000)
    fast, public = exporter.get_finished_logs()
    for readable in (fast, public):
        readable.log_record.observed_timestamp = 0
    assert encode_logs([fast]) == encode_logs([public])
    assert fast.log_record.trace_id != 0 and fast.log_record.span_id != 0
    assert (
        fast.instrumentation_scope is not None and fast.instrumentation_scope.name == "svc.orders"
    )
    provider.shutdown()


def test_otlp_handler_leaves_oversized_records_to_the_sdk_limits() -> None:
    exporter, provider, processor = _in_memory_pipeline()
    handler = OtlpLogHandler(OtlpLogs(provider, processor))
    record = logging.LogRecord("svc", logging.INFO, __file__, 1, "wide", None, None)
    for i in range(200):
        setattr(record, f"field_{i}", i)
    with pytest.warns(LogRecordDroppedAttributesWarning):  # the SDK's own notice
        handler.emit(record)
    assert provider.force_flush(5000)
    [queued] = exporter.get_finished_logs()
    assert len(queued.log_record.attributes or {}) == 128
    assert queued.dropped_attributes == 72
    provider.shutdown()


class _Float(float):  # as numpy's float64 is
    pass


_Pair = collections.namedtuple("_Pair", "a b")


@dataclasses.dataclass
class _Order:
    id: int


class _Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    "value",
    [
        _Float(1.5),
        _Pair(1, 2),
        _Order(7),
        datetime.datetime(2024, 1, 2, 3, 4, 5),
        datetime.date(2024, 1, 2),
        uuid.UUID(int=5),
        decimal.Decimal("1.10"),
        b"raw",
        {1, 2},
        {7: "a", 2.5: "b", None: "c", False: "d"},
        _Level.HIGH,
        "é and 😀",
        2**70,
        [_Pair(1, 2), {"k": _Float(2.0)}, (3, 4)],
    ],
    ids=repr,
)
def test_json_lines_hold_what_the_stdlib_encoder_would(value: object) -> None:
    record = logging.LogRecord("svc", logging.INFO, __file__, 1, "m", None, None)
    record.value = value
    written = json.loads(JsonFormatter().format(record))["value"]
    assert written == json.loads(json.dumps({"v": value}, default=str))["v"]


def test_a_filter_on_the_access_logger_adds_fields_to_the_line() -> None:
    access = logging.getLogger("aiva.access")
    lines: list[str] = []
    handler = logging.Handler()
    handler.setFormatter(JsonFormatter())
    handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]

    def add_region(record: logging.LogRecord) -> bool:
        record.region = "eu"
        return True

    access.addHandler(handler)
    access.addFilter(add_region)
    previous_level = access.level
    access.setLevel(logging.INFO)
    try:
        AccessLog().write("GET", "/items/{id}", 200, 0.0012, quiet=False)
    finally:
        access.removeFilter(add_region)
        access.removeHandler(handler)
        access.setLevel(previous_level)
    [line] = lines
    entry = json.loads(line)
    assert entry["region"] == "eu"
    assert (entry["http_route"], entry["status_code"], entry["duration_ms"]) == (
        "/items/{id}",
        200,
        1.2,
    )
