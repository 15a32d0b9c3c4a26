"""The plain pipeline's drop counts: the SDK's own processor metrics folded into aiva's."""

from __future__ import annotations

import os

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiva.telemetry.exporters import ExportStats
from aiva.telemetry.sdk_drops import INTERNAL_METRICS, SdkDropCounts


def _processor(meters: MeterProvider) -> BatchSpanProcessor:
    return BatchSpanProcessor(
        InMemorySpanExporter(),
        max_queue_size=4,
        max_export_batch_size=4,
        schedule_delay_millis=60_000,
        meter_provider=meters,
    )


def _finished_span() -> object:
    span = TracerProvider(shutdown_on_exit=False).get_tracer("t").start_span("s")
    span.end()
    return span


def test_a_span_refused_after_shutdown_is_counted_once() -> None:
    stats = ExportStats()
    processor = SdkDropCounts(stats, "spans").built(_processor)
    assert INTERNAL_METRICS not in os.environ  # only while it was built
    span = _finished_span()
    for _ in range(3):  # the queue takes 4: nothing dropped yet, 3 waiting
        processor.on_end(span)  # type: ignore[arg-type]
    assert stats.counts()["spans", "dropped"] == 0
    processor.shutdown()  # exports the 3
    processor.on_end(span)  # type: ignore[arg-type]
    assert stats.counts()["spans", "dropped"] == 1
    assert stats.counts()["spans", "dropped"] == 1  # counted once, however often read


def test_what_waits_in_the_queue_is_dropped_when_shutdown_gives_up() -> None:
    stats = ExportStats()
    processor = SdkDropCounts(stats, "spans").built(_processor)
    span = _finished_span()
    for _ in range(3):
        processor.on_end(span)  # type: ignore[arg-type]
    assert stats.abandon()["spans"] == 3
    processor.shutdown()
