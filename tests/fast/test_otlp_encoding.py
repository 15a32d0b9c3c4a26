"""aiva's in-place OTLP encoder against the SDK's: the same requests, byte for byte."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from opentelemetry import context as otel_context
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as sdk_encode_spans,
)
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState
from opentelemetry.trace.status import Status, StatusCode

from aiva.fast.otlp_encoding import encode_logs, encode_spans

ATTRIBUTES = {
    "text": "héllo",
    "empty": "",
    "count": 42,
    "negative": -7,
    "big": 2**62,
    "ratio": 0.25,
    "flag": True,
    "off": False,
    "raw": b"\x00\xff",
    "words": ["a", "b"],
    "numbers": [1, 2, 3],
    "floats": (0.5, 1.5),
}

REMOTE_PARENT = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "v1"), ("other", "x=y")]),
)


def spans_of_every_shape() -> Sequence[ReadableSpan]:
    exporter = InMemorySpanExporter()
    for name in ("one", "two"):  # two resources, each with two scopes
        provider = TracerProvider(resource=Resource({"service.name": name, "n": 1}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        plain = provider.get_tracer("plain")
        versioned = provider.get_tracer("versioned", "1.2.3", schema_url="https://schema/1")
        remote = set_span_in_context(NonRecordingSpan(REMOTE_PARENT))
        with plain.start_as_current_span("server", context=remote, kind=SpanKind.SERVER) as root:
            root.set_attributes(ATTRIBUTES)
            root.add_event("event", {"at": 1, "what": "thing"})
            with versioned.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
                child.set_status(Status(StatusCode.ERROR, "it broke"))
                child.record_exception(ValueError("bad value"))
        linked = plain.start_span(
            "linked",
            kind=SpanKind.PRODUCER,
            links=[Link(REMOTE_PARENT, {"link": "yes"}), Link(root.get_span_context())],
        )
        linked.set_status(Status(StatusCode.OK))
        linked.end()
        consumer = versioned.start_span("consumer", kind=SpanKind.CONSUMER, attributes={})
        consumer.end()
    return exporter.get_finished_spans()


def logs_of_every_shape() -> Sequence[ReadableLogRecord]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource({"service.name": "logs"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    access = provider.get_logger("aiva.access")
    other = provider.get_logger("other", "0.1", schema_url="https://schema/2")
    in_span = set_span_in_context(NonRecordingSpan(REMOTE_PARENT))
    access.emit(
        LogRecord(
            timestamp=1_700_000_000_123_456_789,
            context=in_span,
            severity_text="INFO",
            severity_number=SeverityNumber.INFO,
            body="GET /items/{item_id} 200",
            attributes={"http_route": "/items/{item_id}", "status_code": 200, "ms": 1.5},
        )
    )
    access.emit(LogRecord(body=None, context=otel_context.Context()))  # no span, no level
    other.emit(
        LogRecord(
            severity_number=SeverityNumber.ERROR,
            severity_text="ERROR",
            body={"structured": [1, "two"], "nested": {"k": True}},
            attributes=ATTRIBUTES,
            event_name="app.event",
        )
    )
    other.emit(LogRecord(body=12, severity_number=SeverityNumber.WARN))
    return exporter.get_finished_logs()


def test_spans_encode_exactly_as_the_sdk_does() -> None:
    spans = spans_of_every_shape()
    assert len(spans) == 8
    ours, theirs = encode_spans(spans), sdk_encode_spans(spans)
    assert ours == theirs
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )
    # Grouped as the SDK groups: two resources, two scopes each.
    assert [len(r.scope_spans) for r in ours.resource_spans] == [2, 2]


def test_logs_encode_exactly_as_the_sdk_does() -> None:
    records = logs_of_every_shape()
    assert len(records) == 4
    ours, theirs = encode_logs(records), sdk_encode_logs(records)
    assert ours == theirs
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )
    first = ours.resource_logs[0].scope_logs[0].log_records[0]
    assert first.trace_id == REMOTE_PARENT.trace_id.to_bytes(16, "big")
    assert first.attributes[1].value.int_value == 200


def test_an_attribute_it_cannot_encode_costs_only_that_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = logs_of_every_shape()
    records[0].log_record.attributes = {"good": "yes", "bad": object(), "also": 1}
    with caplog.at_level(logging.ERROR, logger="aiva.fast.otlp_encoding"):
        encoded = encode_logs(records[:1])
    keys = [kv.key for kv in encoded.resource_logs[0].scope_logs[0].log_records[0].attributes]
    assert keys == ["good", "also"]
    assert "cannot encode attribute bad" in caplog.text
