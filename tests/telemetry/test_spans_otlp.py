"""aiva's lean spans (aiva.telemetry.spans) against the SDK's spans for the same calls, on
one provider, compared as OTLP bytes (ids and times normalised): attribute limits and
cleaning, events, links, status rules, exceptions, ended spans, nesting, sampling,
processors that change a span as it starts, decorators, and concurrent tasks and threads."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aiva.telemetry.spans import LeanSpan, LeanTracer, LeanTracerProvider, tracer_of
from aiva.telemetry.traces import AdjustableRatioSampler
from tests.telemetry.test_operation_otlp import _each_alone, _normalised

LIMITS = SpanLimits(
    max_span_attributes=4,
    max_span_attribute_length=8,
    max_events=3,
    max_links=2,
    max_event_attributes=2,
    max_link_attributes=2,
    max_attribute_length=6,
)
Run = Callable[[trace.Tracer], None]


class _Opaque:
    """An attribute value of no valid type, with its own str."""

    def __str__(self) -> str:
        return "opaque-value"


class Pipeline:
    def __init__(self, sampler: Any = ALWAYS_ON) -> None:
        self.spans = InMemorySpanExporter()
        self.provider = LeanTracerProvider(
            span_limits=LIMITS, sampler=sampler, shutdown_on_exit=False
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self.spans))

    def both(self, run: Run) -> tuple[list[ReadableSpan], list[ReadableSpan]]:
        """`run` with a lean tracer, then with the SDK's, on the same provider."""
        lean_tracer = tracer_of(self.provider, "svc", "1.0")
        assert isinstance(lean_tracer, LeanTracer)
        run(lean_tracer)
        lean = list(self.spans.get_finished_spans())
        self.spans.clear()
        run(self.provider.get_tracer("svc", "1.0"))
        sdk = list(self.spans.get_finished_spans())
        self.spans.clear()
        assert len(lean) == len(sdk)
        return lean, sdk

    def same(self, run: Run) -> list[ReadableSpan]:
        lean, sdk = self.both(run)
        assert _normalised(lean) == _normalised(sdk)
        return lean


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    built = Pipeline()
    yield built
    built.provider.shutdown()


def test_attributes_cleaned_cut_and_counted_as_the_sdk(pipeline: Pipeline) -> None:
    def run(tracer: trace.Tracer) -> None:
        plain = tracer.start_span("plain", attributes={"a": "short", "b": 2, "c": 0.5, "d": True})
        plain.set_attribute("a", "again")  # re-set: moved last
        plain.set_attribute("e", 1)  # full: the oldest is dropped
        plain.end()
        cut = tracer.start_span("cut", attributes={"long": "x" * 20, "n": 1})
        cut.set_attribute("later", "y" * 30)
        cut.end()
        mixed = tracer.start_span("mixed")
        mixed.set_attribute("list", ["abcdefghijkl", "b"])
        mixed.set_attribute("bytes", b"\x00\x01")
        mixed.set_attribute("opaque", _Opaque())  # type: ignore[arg-type]
        mixed.set_attribute("", "empty key")
        mixed.set_attribute("map", {"k": "v" * 12, "": 1})
        mixed.set_attribute("x", 1)
        mixed.end()
        many = tracer.start_span("many", attributes={f"k{i}": i for i in range(7)})
        many.set_attributes({"s": "ok", 3: "int key", "": "dropped", "t": [1, 2]})  # type: ignore[dict-item]
        many.end()
        batch = tracer.start_span("batch")
        batch.set_attributes({"p": 1, "q": "two"})
        batch.end()

    spans = {s.name: s for s in pipeline.same(run)}
    assert spans["plain"].dropped_attributes == 1  # the limits applied
    assert spans["cut"].attributes is not None
    assert spans["cut"].attributes["long"] == "x" * 8
    assert spans["many"].dropped_attributes > 0


def test_events_links_and_their_limits_as_the_sdk(pipeline: Pipeline) -> None:
    remote = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(1))

    def run(tracer: trace.Tracer) -> None:
        span = tracer.start_span("events", kind=SpanKind.CLIENT)
        for index in range(5):
            span.add_event(f"e{index}", {"a": "long value", "b": 1, "c": 2}, timestamp=index + 1)
        span.add_link(remote, {"l": "linked-value", "m": 1, "n": 2})
        span.add_link(trace.INVALID_SPAN_CONTEXT)  # not kept: invalid, no attributes
        span.add_link(trace.INVALID_SPAN_CONTEXT, {"why": "kept"})
        span.add_link(remote)
        span.end()
        linked = tracer.start_span("linked", links=[Link(remote, {"x": 1})])
        linked.end()

    spans = {s.name: s for s in pipeline.same(run)}
    assert spans["events"].dropped_events == 2
    assert spans["events"].dropped_links == 1
    assert spans["events"].events[0].attributes == {"b": 1, "c": 2}


def test_status_exceptions_and_ended_spans_as_the_sdk(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    def run(tracer: trace.Tracer) -> None:
        ok = tracer.start_span("ok")
        ok.set_status(Status(StatusCode.OK))
        ok.set_status(StatusCode.ERROR, "ignored: OK is final")
        ok.end()
        error = tracer.start_span("error")
        error.set_status(StatusCode.ERROR, "bad")
        error.set_status(Status(StatusCode.UNSET))
        error.set_status(Status(StatusCode.ERROR, "worse"), "description ignored")
        error.record_exception(ValueError("recorded"), {"extra": 1}, timestamp=5)
        error.update_name("renamed")
        error.end(end_time=10**18)
        error.set_attribute("late", 1)
        error.add_event("late")
        error.update_name("late")
        error.set_status(StatusCode.OK)
        error.end()
        with pytest.raises(KeyError), tracer.start_as_current_span("raised", attributes={"a": 1}):
            raise KeyError("missing")
        with (
            pytest.raises(KeyError),
            tracer.start_as_current_span(
                "quiet", record_exception=False, set_status_on_exception=False
            ),
        ):
            raise KeyError("not recorded")
        with pytest.raises(RuntimeError), tracer.start_span("entered"):  # the span's __exit__
            raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING):
        spans = {s.name: s for s in pipeline.same(run)}
    assert spans["ok"].status.status_code is StatusCode.OK
    assert spans["renamed"].status.description == "worse"
    assert spans["raised"].events[0].name == "exception"
    assert spans["quiet"].events == ()
    assert spans["entered"].status.description == "RuntimeError: boom"
    # Every ended-span warning, as the SDK's words, once for each tracer.
    for text in (
        "Setting attribute on ended span.",
        "Tried calling _add_event on an ended span.",
        "Tried calling update_name on an ended span.",
        "Tried calling set_status on an ended span.",
        "Calling end() on an ended span.",
    ):
        assert sum(text in r.getMessage() for r in caplog.records) == 2, text


def test_nesting_parents_and_sampling_as_the_sdk() -> None:
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    unsampled = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}
    state = {**carrier, "tracestate": "vendor=value"}

    def run(tracer: trace.Tracer) -> None:
        with tracer.start_as_current_span("root", kind=SpanKind.SERVER):
            with tracer.start_as_current_span("child") as child:
                child.set_attribute("depth", 2)
            detached = tracer.start_span("detached", context=Context())
            detached.end()
        for name, headers in (("remote", carrier), ("state", state), ("dropped", unsampled)):
            parent = TraceContextTextMapPropagator().extract(headers)
            span = tracer.start_span(name, context=parent, start_time=1_000)
            assert span.is_recording() is (name != "dropped")
            span.end(end_time=2_000)

    pipeline = Pipeline(AdjustableRatioSampler(1.0))
    try:
        spans = {s.name: s for s in pipeline.same(run)}
    finally:
        pipeline.provider.shutdown()
    assert "dropped" not in spans
    assert spans["child"].parent is not None
    assert spans["child"].parent.span_id == spans["root"].context.span_id
    assert spans["remote"].parent is not None and spans["remote"].parent.is_remote
    assert spans["state"].context.trace_state.get("vendor") == "value"
    assert spans["remote"].start_time == 1_000


def test_a_ratio_of_zero_records_nothing_on_either_path() -> None:
    pipeline = Pipeline(AdjustableRatioSampler(0.0))
    try:
        tracer = tracer_of(pipeline.provider, "svc")
        span = tracer.start_span("never")
        assert not span.is_recording()
        assert not span.get_span_context().trace_flags.sampled
        span.end()
        assert pipeline.spans.get_finished_spans() == ()
    finally:
        pipeline.provider.shutdown()


class _Masking(SpanProcessor):
    """Changes a span as it starts, as aiva's credential masker does."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = span.attributes or {}
        if "secret" in attributes:
            span.set_attribute("secret", "***")
        span.set_attribute("seen.name", span.name)


def test_a_processor_sees_and_changes_a_starting_span_as_with_the_sdk(
    pipeline: Pipeline,
) -> None:
    pipeline.provider.add_span_processor(_Masking())  # added after the tracer's making

    def run(tracer: trace.Tracer) -> None:
        span = tracer.start_span("masked", attributes={"secret": "hunter2", "a": 1})
        assert isinstance(span, ReadableSpan)
        span.end()

    [span] = pipeline.same(run)
    assert span.attributes == {"a": 1, "secret": "***", "seen.name": "masked"}


def test_decorators_as_the_sdk(pipeline: Pipeline) -> None:
    def run(tracer: trace.Tracer) -> None:
        @tracer.start_as_current_span("sync", attributes={"kind": "sync"})
        def work(value: int) -> int:
            return value + 1

        @tracer.start_as_current_span("async")
        async def awork(value: int) -> int:
            await asyncio.sleep(0)
            return value * 2

        assert work(1) == 2
        assert work(2) == 3  # a fresh span each call
        assert asyncio.run(awork(3)) == 6

    spans = pipeline.same(run)
    assert sorted(s.name for s in spans) == ["async", "sync", "sync"]


def test_concurrent_tasks_as_the_sdk(pipeline: Pipeline) -> None:
    def run(tracer: trace.Tracer) -> None:
        async def task(index: int) -> None:
            with tracer.start_as_current_span("task", attributes={"index": index}):
                await asyncio.sleep(0.001 * (index % 3))
                with tracer.start_as_current_span("step", attributes={"index": index}):
                    await asyncio.sleep(0)

        async def main() -> None:
            await asyncio.gather(*(task(i) for i in range(20)))

        asyncio.run(main())

    lean, sdk = pipeline.both(run)
    assert _each_alone(lean) == _each_alone(sdk)
    steps = [parent for _, parent in _each_alone(lean) if parent is not None]
    assert sorted(index for name, index in steps if name == "task") == list(range(20))


def test_one_span_changed_by_many_threads_as_the_sdk(pipeline: Pipeline) -> None:
    """Eight threads set 50 attributes each and add events on one span: the counts kept
    and dropped are the SDK's (which ones survive depends on the interleaving)."""

    def run(tracer: trace.Tracer) -> None:
        span = tracer.start_span("shared")
        token = otel_context.attach(trace.set_span_in_context(span))
        start = threading.Barrier(8)

        def worker(thread: int) -> None:
            start.wait()
            for index in range(50):
                span.set_attribute(f"t{thread}.{index}", index)
                span.add_event("tick", {"thread": thread})

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        otel_context.detach(token)
        span.end()

    lean, sdk = pipeline.both(run)
    for spans in (lean, sdk):
        [span] = spans
        assert len(span.attributes or {}) == 4
        assert span.dropped_attributes == 8 * 50 - 4
        assert len(span.events) == 3
        assert span.dropped_events == 8 * 50 - 3


def test_lean_spans_only_from_leans_providers_and_read_live(pipeline: Pipeline) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    plain = TracerProvider(shutdown_on_exit=False)
    assert not isinstance(tracer_of(plain, "svc"), LeanTracer)
    assert not isinstance(tracer_of(trace.NoOpTracerProvider(), "svc"), LeanTracer)
    tracer = tracer_of(pipeline.provider, "svc", "2.0")
    span = tracer.start_span("live", attributes={"a": 1})
    assert isinstance(span, LeanSpan)
    assert span.attributes == {"a": 1} and span.end_time is None and span.is_recording()
    assert span.instrumentation_scope is not None
    assert (span.instrumentation_scope.name, span.instrumentation_scope.version) == ("svc", "2.0")
    span.end()
    assert '"name": "live"' in span.to_json()
    assert not span.is_recording()


def test_internal_metrics_variable_keeps_the_sdks_spans(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED the SDK counts its spans itself."""
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    assert not isinstance(tracer_of(pipeline.provider, "svc"), LeanTracer)
