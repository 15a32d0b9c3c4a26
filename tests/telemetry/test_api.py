"""The library API: operation, log_context, tracer, meter (sync, async, concurrent tasks)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer

import aiva
from aiva.api import _operation_tracer
from aiva.context import log_fields_var
from tests.telemetry.conftest import InMemoryTelemetry, _reset_globals


def test_operation_context_manager(
    otel: InMemoryTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiva.operation")
    with aiva.operation("load.user", user_kind="admin"):
        pass
    [span] = otel.spans.get_finished_spans()
    assert span.name == "load.user"
    assert span.attributes == {"user_kind": "admin"}
    [point] = otel.metric_points("aiva.operation.duration")
    assert point.attributes == {"operation": "load.user"}  # type: ignore[attr-defined]
    assert point.count == 1  # type: ignore[attr-defined]
    levels = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "aiva.operation"]
    assert levels == [
        ("DEBUG", "operation load.user started"),
        ("INFO", "operation load.user finished"),
    ]
    assert caplog.records[-1].duration_ms >= 0  # type: ignore[attr-defined]


def test_operation_records_and_propagates_errors(
    otel: InMemoryTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="boom"), aiva.operation("parse"):
        raise ValueError("boom")
    [span] = otel.spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage() == "operation parse failed: boom"
    [point] = otel.metric_points("aiva.operation.duration")
    assert point.attributes == {"operation": "parse", "error.type": "ValueError"}  # type: ignore[attr-defined]


def test_operation_decorates_sync_and_async(otel: InMemoryTelemetry) -> None:
    @aiva.operation("sync.step")
    def sync_step(x: int) -> int:
        return x + 1

    @aiva.operation("async.step")
    async def async_step(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert sync_step(1) == 2
    assert asyncio.run(async_step(3)) == 6
    assert sorted(s.name for s in otel.spans.get_finished_spans()) == ["async.step", "sync.step"]


def test_operation_async_context_manager_nests(otel: InMemoryTelemetry) -> None:
    async def run() -> None:
        async with aiva.operation("outer"):
            with aiva.operation("inner"):
                await asyncio.sleep(0)

    asyncio.run(run())
    spans = {s.name: s for s in otel.spans.get_finished_spans()}
    assert spans["inner"].parent is not None
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id


def test_log_context_binds_fields_to_logs_and_span(
    otel: InMemoryTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        aiva.tracer().start_as_current_span("request"),
        aiva.log_context(user_id="u1", component="billing"),
    ):
        assert log_fields_var.get() == {"user_id": "u1", "component": "billing"}
    assert log_fields_var.get() is None
    [span] = otel.spans.get_finished_spans()
    assert span.attributes == {"user_id": "u1", "component": "billing"}


def test_log_context_never_leaks_between_concurrent_tasks(otel: InMemoryTelemetry) -> None:
    seen: dict[str, object] = {}

    async def task(name: str, delay: float) -> None:
        with aiva.log_context(user_id=name):
            await asyncio.sleep(delay)
            with aiva.log_context(session_id=f"s-{name}"):
                await asyncio.sleep(delay)
                seen[name] = dict(log_fields_var.get() or {})
        seen[f"{name}-after"] = log_fields_var.get()

    async def run() -> None:
        await asyncio.gather(task("a", 0.02), task("b", 0.01), task("c", 0.0))

    asyncio.run(run())
    for name in "abc":
        assert seen[name] == {"user_id": name, "session_id": f"s-{name}"}
        assert seen[f"{name}-after"] is None


def test_meter_and_tracer_come_from_the_configured_providers(otel: InMemoryTelemetry) -> None:
    aiva.meter().create_counter("orders.placed").add(3, {"kind": "web"})
    with aiva.tracer().start_as_current_span("custom"):
        pass
    [point] = otel.metric_points("orders.placed")
    assert point.value == 3  # type: ignore[attr-defined]
    assert [s.name for s in otel.spans.get_finished_spans()] == ["custom"]


def _by_attribute(spans: Sequence[ReadableSpan], key: str) -> dict[object, ReadableSpan]:
    """The spans carrying attribute `key`, by its value."""
    return {s.attributes[key]: s for s in spans if s.attributes and key in s.attributes}


def test_one_operation_shared_by_concurrent_tasks(
    otel: InMemoryTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    shared = aiva.operation("shared")
    inside: dict[int, tuple[int, int]] = {}

    async def task(i: int) -> None:
        async with shared:
            trace.get_current_span().set_attribute("task", i)
            began = time.time_ns()
            await asyncio.sleep(0.010 + i * 0.002)  # they end in the order they started
            inside[i] = (began, time.time_ns())

    async def run() -> None:
        with aiva.tracer().start_as_current_span("batch"):
            await asyncio.gather(*(task(i) for i in range(50)))

    asyncio.run(run())
    spans = otel.spans.get_finished_spans()
    [batch] = [s for s in spans if s.name == "batch"]
    by_task = _by_attribute([s for s in spans if s.name == "shared"], "task")
    assert sorted(by_task) == list(range(50))
    for i, span in by_task.items():
        # Each span covers its own task's block (and so its own sleep), not another's.
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= inside[i][0] and inside[i][1] <= span.end_time, i
        # Not ended by a later task's exit (generous: a busy host delays wake-ups).
        assert span.end_time - span.start_time < (0.010 + i * 0.002 + 0.5) * 1e9, i
        assert span.parent is not None and span.parent.span_id == batch.context.span_id
    [point] = otel.metric_points("aiva.operation.duration")
    assert point.count == 50  # type: ignore[attr-defined]
    # OpenTelemetry logs "Failed to detach context" when a span ends in another context.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_one_operation_shared_by_threads(
    otel: InMemoryTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    shared = aiva.operation("shared")
    all_in = threading.Barrier(4, timeout=5)
    inside: dict[int, tuple[int, int]] = {}

    def work(i: int) -> None:
        with shared:
            trace.get_current_span().set_attribute("thread", i)
            all_in.wait()  # every thread holds an entry before any leaves
            began = time.time_ns()
            time.sleep(0.01 + i * 0.01)
            inside[i] = (began, time.time_ns())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    by_thread = _by_attribute(otel.spans.get_finished_spans(), "thread")
    assert sorted(by_thread) == [0, 1, 2, 3]
    for i, span in by_thread.items():
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= inside[i][0] and inside[i][1] <= span.end_time, i
        assert span.parent is None
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_recursive_operation_nests_its_spans(otel: InMemoryTelemetry) -> None:
    @aiva.operation("descend")
    def descend(depth: int) -> None:
        trace.get_current_span().set_attribute("depth", depth)
        if depth:
            descend(depth - 1)
        time.sleep(0.005)

    @aiva.operation("descend.async")
    async def descend_async(depth: int) -> None:
        trace.get_current_span().set_attribute("depth.async", depth)
        if depth:
            await descend_async(depth - 1)
        await asyncio.sleep(0.005)

    descend(3)
    asyncio.run(descend_async(3))
    spans = otel.spans.get_finished_spans()
    for key in ("depth", "depth.async"):
        by_depth = _by_attribute(spans, key)
        assert sorted(by_depth) == [0, 1, 2, 3]
        assert by_depth[3].parent is None
        for depth in range(3):
            inner, outer = by_depth[depth], by_depth[depth + 1]
            assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
            assert outer.start_time is not None and outer.end_time is not None
            assert inner.start_time is not None and inner.end_time is not None
            # Each its own duration: the outer one lasts its own sleep longer.
            assert outer.start_time <= inner.start_time
            assert outer.end_time - inner.end_time >= 0.004 * 1e9
            assert inner.end_time - inner.start_time >= 0.004 * 1e9 * (depth + 1)


def test_operation_durations_use_second_scale_buckets(otel: InMemoryTelemetry) -> None:
    from aiva.telemetry.metrics import DURATION_BUCKETS_S

    with aiva.operation("quick"):
        time.sleep(0.02)
    [point] = otel.metric_points("aiva.operation.duration")
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS_S  # type: ignore[attr-defined]
    # 20 ms or more lands past the first bucket (with the SDK's 0, 5, 10, ... it would
    # land in the first, as every operation did).
    counts = point.bucket_counts  # type: ignore[attr-defined]
    assert sum(counts) == 1 and counts[0] == 0 and counts[1] == 0


class _CountingTracerProvider(TracerProvider):
    """The SDK's provider, counting its tracer lookups by scope name."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[str] = []

    def get_tracer(self, instrumenting_module_name: str, *args: Any, **kwargs: Any) -> Tracer:
        self.lookups.append(instrumenting_module_name)
        return super().get_tracer(instrumenting_module_name, *args, **kwargs)


def test_operation_tracer_is_looked_up_once_and_a_later_provider_honoured() -> None:
    _reset_globals()  # nothing installed: the API's proxy provider, as at import time
    early = aiva.operation("early")  # e.g. a decorator applied when a module is imported
    with early:
        assert not trace.get_current_span().is_recording()  # no provider yet: no span
    spans = InMemorySpanExporter()
    provider = _CountingTracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(provider)  # installed later, as aiva's lifespan does
    metrics.set_meter_provider(meter_provider)
    try:
        with early:
            assert trace.get_current_span().is_recording()
        for i in range(5):  # a new object each time, as a handler creates them
            with aiva.operation("step", i=i):
                pass
        assert provider.lookups.count("aiva.operation") == 1  # not once per entry
        names = [s.name for s in spans.get_finished_spans()]
        assert names == ["early", *["step"] * 5]
        assert {s.instrumentation_scope.name for s in spans.get_finished_spans()} == {
            "aiva.operation"
        }
        # The very tracer the API hands out for that scope and version.
        assert _operation_tracer() is trace.get_tracer("aiva.operation", aiva.__version__)
        data = reader.get_metrics_data()
        [duration] = [
            m
            for r in (data.resource_metrics if data else [])
            for s in r.scope_metrics
            for m in s.metrics
            if m.name == "aiva.operation.duration"
        ]
        counts = {p.attributes["operation"]: p.count for p in duration.data.data_points}  # type: ignore[union-attr, index]
        assert counts == {"early": 1, "step": 5}
    finally:
        provider.shutdown()
        meter_provider.shutdown()
        _reset_globals()


def test_a_new_provider_gets_its_own_operation_tracer() -> None:
    _reset_globals()
    first, second = _CountingTracerProvider(), _CountingTracerProvider()
    try:
        trace.set_tracer_provider(first)
        with aiva.operation("one"):
            pass
        _reset_globals()  # as tests do: the global is set again
        trace.set_tracer_provider(second)
        with aiva.operation("two"):
            pass
        assert first.lookups == ["aiva.operation"] and second.lookups == ["aiva.operation"]
    finally:
        first.shutdown()
        second.shutdown()
        _reset_globals()
