"""`aiva.operation`'s lean span path (start_span and a context attach, no context-manager
generators, a cached tracer) against the public SDK path for the same calls
(`start_as_current_span` on a tracer looked up each time, the exception recorded as the
operation records it), compared as OTLP bytes: attribute limits, exceptions, nesting and
concurrent tasks. On a plain SDK provider and on aiva's (whose tracers give aiva's lean
spans, aiva.telemetry.spans): the public path is the SDK's own tracer either way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

import aiva
from aiva import __version__
from aiva.api import OPERATION_SCOPE
from aiva.settings.masking import mask_text, masked_exception
from aiva.telemetry.spans import LeanTracer, LeanTracerProvider
from tests.telemetry.conftest import _reset_globals

LIMITS = SpanLimits(max_span_attributes=3, max_span_attribute_length=8, max_events=4)
ATTRIBUTES: dict[str, Any] = {"text": "x" * 20, "count": 2, "ratio": 0.5, "flag": True}


@pytest.fixture(params=[TracerProvider, LeanTracerProvider], ids=["sdk", "aiva"])
def exporter(request: pytest.FixtureRequest) -> Iterator[InMemorySpanExporter]:
    """A global tracer provider (the SDK's, or aiva's with lean spans) with tight span
    limits, into memory."""
    _reset_globals()
    spans = InMemorySpanExporter()
    provider = request.param(span_limits=LIMITS, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    yield spans
    provider.shutdown()
    _reset_globals()


@contextmanager
def public_operation(name: str, **attributes: Any) -> Iterator[None]:
    """What aiva.operation does to its span, through the public path."""
    tracer = trace.get_tracer(OPERATION_SCOPE, __version__)
    with tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield
        except Exception as error:
            span.record_exception(error, attributes=masked_exception(error))
            span.set_status(Status(StatusCode.ERROR, mask_text(str(error))))
            raise


def fails() -> None:
    raise ValueError("token=abc123 was refused")


def _normalised(spans: Sequence[ReadableSpan]) -> bytes:
    """The spans as one OTLP request, with what must differ between two runs made the
    same: ids (random) by their order of appearance, times by their order, and each
    exception's stack trace cut to its last line (its frames are this test's)."""
    request = encode_spans(sorted(spans, key=lambda s: (s.start_time or 0, s.name)))
    ids: dict[bytes, bytes] = {}
    times: list[int] = []

    def same_id(value: bytes) -> bytes:
        return ids.setdefault(value, len(ids).to_bytes(len(value), "big")) if value else value

    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                span.trace_id, span.span_id = same_id(span.trace_id), same_id(span.span_id)
                span.parent_span_id = same_id(span.parent_span_id)
                times += [span.start_time_unix_nano, span.end_time_unix_nano]
                for event in span.events:
                    times.append(event.time_unix_nano)
                    for pair in event.attributes:
                        if pair.key == "exception.stacktrace":
                            text = pair.value.string_value.strip().splitlines()
                            pair.value.string_value = text[-1]
    order = {t: i for i, t in enumerate(sorted(set(times)))}
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                span.start_time_unix_nano = order[span.start_time_unix_nano]
                span.end_time_unix_nano = order[span.end_time_unix_nano]
                for event in span.events:
                    event.time_unix_nano = order[event.time_unix_nano]
    return request.SerializeToString(deterministic=True)


def _both(
    exporter: InMemorySpanExporter, run: Callable[[Callable[..., Any]], None]
) -> tuple[bytes, bytes]:
    """`run` with aiva.operation, then with the public path: each run's spans, normalised."""
    run(aiva.operation)
    lean = exporter.get_finished_spans()
    exporter.clear()
    run(public_operation)
    public = exporter.get_finished_spans()
    assert len(lean) == len(public) > 0
    return _normalised(lean), _normalised(public)


def test_limits_and_nesting_as_the_public_path(exporter: InMemorySpanExporter) -> None:
    def run(operation: Callable[..., Any]) -> None:
        with operation("outer", **ATTRIBUTES), operation("inner", step=1):
            pass

    lean, public = _both(exporter, run)
    assert lean == public
    outer = next(s for s in exporter.get_finished_spans() if s.name == "outer")
    assert outer.dropped_attributes == 1  # the limits did apply


def test_an_exception_as_the_public_path(exporter: InMemorySpanExporter) -> None:
    def run(operation: Callable[..., Any]) -> None:
        with pytest.raises(ValueError), operation("failing", **ATTRIBUTES):
            fails()

    lean, public = _both(exporter, run)
    assert lean == public
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].attributes is not None
    assert "abc123" not in str(span.events[0].attributes["exception.message"])


def _each_alone(spans: Sequence[ReadableSpan]) -> list[tuple[bytes, tuple[str, Any] | None]]:
    """Each span's OTLP bytes with ids and times cleared, and its parent's (name, index):
    what does not depend on how the tasks interleaved, sorted."""
    by_id = {s.context.span_id: s for s in spans}
    shapes = []
    for span in spans:
        request = encode_spans([span])
        [encoded] = request.resource_spans[0].scope_spans[0].spans
        for field in ("trace_id", "span_id", "parent_span_id"):
            encoded.ClearField(field)
        encoded.start_time_unix_nano = encoded.end_time_unix_nano = 0
        parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        parent_key = (parent.name, (parent.attributes or {}).get("index")) if parent else None
        shapes.append((request.SerializeToString(deterministic=True), parent_key))
    return sorted(shapes, key=repr)


def test_concurrent_tasks_as_the_public_path(exporter: InMemorySpanExporter) -> None:
    def run(operation: Callable[..., Any]) -> None:
        async def task(index: int) -> None:
            with operation("task", index=index):
                await asyncio.sleep(0.001 * (index % 3))
                with operation("step", index=index):
                    await asyncio.sleep(0)

        async def main() -> None:
            await asyncio.gather(*(task(i) for i in range(20)))

        asyncio.run(main())

    run(aiva.operation)
    lean = _each_alone(exporter.get_finished_spans())
    exporter.clear()
    run(public_operation)
    public = _each_alone(exporter.get_finished_spans())
    assert lean == public
    assert len(lean) == 40
    # Each step is the child of its own task's span, in both runs.
    steps = [parent for encoded, parent in lean if parent is not None]
    assert sorted(index for name, index in steps if name == "task") == list(range(20))


def test_aiva_tracer_looked_up_once(exporter: InMemorySpanExporter) -> None:
    provider = trace.get_tracer_provider()
    assert aiva.tracer("svc") is aiva.tracer("svc")  # looked up once
    if isinstance(provider, LeanTracerProvider):
        assert isinstance(aiva.tracer("svc"), LeanTracer)
    else:
        assert aiva.tracer("svc") is provider.get_tracer("svc", __version__)
    with aiva.tracer("svc").start_as_current_span("own", attributes=ATTRIBUTES):
        pass
    [span] = exporter.get_finished_spans()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "svc"
    assert span.dropped_attributes == 1
