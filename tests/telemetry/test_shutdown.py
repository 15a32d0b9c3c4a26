"""Flush and shutdown keep their deadline when an export hangs, and count what is left."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from aiva.fast.batch import count_drops
from aiva.telemetry.exporters import CountingSpanExporter, ExportStats
from aiva.telemetry.shutdown import flush_within, report_abandoned, stop_within


class HungExporter(SpanExporter):
    """An export that hangs (a black-holed collector) until released, 10 s at most."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exporting = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exporting.set()
        self.release.wait(10)
        return SpanExportResult.FAILURE


@pytest.fixture
def hung() -> Iterator[tuple[TracerProvider, HungExporter, ExportStats]]:
    """A tracer provider whose export of its first batch of 10 spans hangs, 40 more queued."""
    exporter, stats = HungExporter(), ExportStats()
    processor = BatchSpanProcessor(
        CountingSpanExporter(exporter, stats), max_queue_size=100, max_export_batch_size=10
    )
    count_drops(processor, stats, "spans")
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(10):
        tracer.start_span("first").end()
    assert exporter.exporting.wait(5)
    for _ in range(40):
        tracer.start_span("queued").end()
    yield provider, exporter, stats
    exporter.release.set()


def test_a_hung_export_does_not_hold_the_shutdown(
    hung: tuple[TracerProvider, HungExporter, ExportStats],
) -> None:
    provider, _, _ = hung
    started = time.monotonic()
    outcome = stop_within([provider], started + 0.5)
    assert time.monotonic() - started < 0.7  # the SDK alone: 30 s (its join timeout)
    assert (outcome.unfinished, outcome.errors) == (["traces"], [])


def test_a_hung_flush_is_given_up_at_the_deadline(
    hung: tuple[TracerProvider, HungExporter, ExportStats],
) -> None:
    provider, _, _ = hung
    started = time.monotonic()
    assert flush_within([provider], started + 0.3).unfinished == ["traces"]
    assert time.monotonic() - started < 0.5


def test_what_was_left_is_counted_as_dropped_and_said_once(
    hung: tuple[TracerProvider, HungExporter, ExportStats],
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider, exporter, stats = hung
    outcome = stop_within([provider], time.monotonic() + 0.2)
    with caplog.at_level(logging.WARNING, logger="aiva.telemetry.shutdown"):
        report_abandoned(stats, outcome, 0.2)
    # The batch in the exporter and the 40 queued behind it.
    assert stats.counts()["spans", "dropped"] == 50
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("telemetry shutdown stopped waiting after 0.2 s, traces still exporting")
    assert "50 spans and 0 log records not sent" in line
    exporter.release.set()  # the export returns after all: counted no more
    time.sleep(0.1)
    assert stats.counts()["spans", "failed"] == 0


def test_nothing_is_said_when_everything_was_sent() -> None:
    stats = ExportStats()
    provider = TracerProvider(shutdown_on_exit=False)
    outcome = stop_within([provider], time.monotonic() + 1)
    report_abandoned(stats, outcome, 1)
    assert outcome.unfinished == [] and stats.counts()["spans", "dropped"] == 0
