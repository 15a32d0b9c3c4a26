"""aiva's lean spans (aiva.telemetry.spans) against the SDK's spans for the same calls, on
one provider, compared as OTLP bytes (ids and times normalised): attribute limits and
cleaning, events, links, status rules, exceptions, ended spans, nesting, sampling,
processors that change a span as it starts, decorators, and concurrent tasks and threads."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


class _Warnings(logging.Handler):
    """The warnings the SDK's and aiva's span code log, by their text."""

    LOGGERS = ("opentelemetry", "aiva.telemetry")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    @contextmanager
    def capturing(self) -> Iterator[list[str]]:
        loggers = [logging.getLogger(name) for name in self.LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.WARNING)
            logger.addHandler(self)
        try:
            yield self.messages
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.removeHandler(self)
                logger.setLevel(level)


class Pipeline:
    def __init__(self, sampler: Any = ALWAYS_ON, limits: SpanLimits = LIMITS) -> None:
        self.spans = InMemorySpanExporter()
        self.provider = LeanTracerProvider(
            span_limits=limits, sampler=sampler, shutdown_on_exit=False
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.warnings: tuple[list[str], list[str]] = ([], [])

    def both(
        self, run: Run, version: str | None = "1.0"
    ) -> tuple[list[ReadableSpan], list[ReadableSpan]]:
        """`run` with a lean tracer, then with the SDK's, on the same provider; the
        warnings each logged are kept in `warnings`."""
        lean_tracer = tracer_of(self.provider, "svc", version)
        assert isinstance(lean_tracer, LeanTracer)
        with _Warnings().capturing() as lean_warnings:
            run(lean_tracer)
        lean = list(self.spans.get_finished_spans())
        self.spans.clear()
        with _Warnings().capturing() as sdk_warnings:
            run(self.provider.get_tracer("svc", version))
        sdk = list(self.spans.get_finished_spans())
        self.spans.clear()
        assert len(lean) == len(sdk)
        self.warnings = (lean_warnings, sdk_warnings)
        return lean, sdk

    def same(self, run: Run, version: str | None = "1.0") -> list[ReadableSpan]:
        """`run` on both paths: the same OTLP bytes, span contexts (flags, remote bit,
        trace state, by order of start) and warnings."""
        lean, sdk = self.both(run, version)
        assert _normalised(lean) == _normalised(sdk)
        assert _contexts(lean) == _contexts(sdk)
        assert sorted(self.warnings[0]) == sorted(self.warnings[1])
        return lean


def _contexts(spans: list[ReadableSpan]) -> list[tuple[Any, ...]]:
    ordered = sorted(spans, key=lambda s: (s.start_time or 0, s.name))
    return [
        (s.name, int(s.context.trace_flags), s.context.is_remote, s.context.trace_state.to_header())
        for s in ordered
        if s.context is not None
    ]


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
        batch.set_attributes({"o": _Opaque(), "l": ["x" * 10, _Opaque()]})  # type: ignore[dict-item]
        batch.end()
        opaque = tracer.start_span("opaque", attributes={"o": _Opaque(), "n": None})  # type: ignore[dict-item]
        opaque.end()

    spans = {s.name: s for s in pipeline.same(run)}
    assert pipeline.warnings[0]  # the cleaning and the limits did warn, on both paths
    assert spans["batch"].attributes is not None
    assert spans["batch"].attributes["o"] == "opaque-value"  # a value's str is not cut
    assert spans["plain"].dropped_attributes == 1  # the limits applied
    assert spans["cut"].attributes is not None
    assert spans["cut"].attributes["long"] == "x" * 8
    assert spans["many"].dropped_attributes > 0


ATTRIBUTE_CALLS: list[tuple[str, Any]] = [
    ("one", {"a": "short"}),
    ("many", {f"k{i}": "v" * i for i in range(200)}),
    ("mixed", {"s": "x" * 300, "l": [1, 2], "": 1, 3: "int key", "o": _Opaque()}),
]


@pytest.mark.parametrize(
    "limits",
    [
        SpanLimits(max_span_attributes=0, max_events=0, max_links=0),
        SpanLimits(
            max_span_attributes=SpanLimits.UNSET,
            max_span_attribute_length=SpanLimits.UNSET,
            max_attributes=SpanLimits.UNSET,
            max_events=SpanLimits.UNSET,
            max_links=SpanLimits.UNSET,
            max_event_attributes=SpanLimits.UNSET,
            max_link_attributes=SpanLimits.UNSET,
            max_attribute_length=SpanLimits.UNSET,
        ),
    ],
    ids=["zero", "unlimited"],
)
def test_zero_and_no_limits_as_the_sdk(limits: SpanLimits) -> None:
    def run(tracer: trace.Tracer) -> None:
        for name, attributes in ATTRIBUTE_CALLS:
            span = tracer.start_span(name, attributes=attributes)
            span.set_attributes(attributes)
            for key, value in attributes.items():
                span.set_attribute(key, value)
            span.add_event("event", attributes)
            span.end()

    pipeline = Pipeline(limits=limits)
    try:
        spans = {s.name: s for s in pipeline.same(run)}
    finally:
        pipeline.provider.shutdown()
    if limits.max_span_attributes == 0:
        assert spans["many"].attributes == {}
        assert spans["many"].dropped_attributes == 600
    else:
        assert len(spans["many"].attributes or {}) == 200


def test_a_tracer_without_a_version_names_its_scope_as_the_sdk(pipeline: Pipeline) -> None:
    def run(tracer: trace.Tracer) -> None:
        tracer.start_span("unversioned").end()

    [span] = pipeline.same(run, version=None)
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.version == ""


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
        made = []
        for tracer in (tracer_of(pipeline.provider, "svc"), pipeline.provider.get_tracer("svc")):
            span = tracer.start_span("never")
            made.append((span.is_recording(), int(span.get_span_context().trace_flags)))
            span.end()
        assert made[0] == made[1] == (False, int(TraceFlags.RANDOM_TRACE_ID))
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


def test_end_on_exit_false_and_one_use_as_the_sdk(pipeline: Pipeline) -> None:
    def run(tracer: trace.Tracer) -> None:
        with tracer.start_as_current_span("kept open", end_on_exit=False) as span:
            pass
        assert span.is_recording()
        span.set_attribute("after", True)
        span.end()
        manager = tracer.start_as_current_span("once")
        with manager:
            pass
        with pytest.raises((RuntimeError, AttributeError)), manager:
            pass

    [kept, once] = sorted(pipeline.same(run), key=lambda s: s.name)
    assert kept.attributes == {"after": True}
    assert once.name == "once"


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
