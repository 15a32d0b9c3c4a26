"""The SDK's batch processors (Batch{Span,LogRecord}Processor, opentelemetry-sdk 1.45):
their queue, reached for two things it offers no public way to do.

- **Drop counts** (`batch_drop_counts`). The processor reports a full queue's drops only
  to its internal metrics (`_batch_processor._metrics`), which an environment variable
  switches on and which add a counter update to every span. aiva puts a DropCounter in
  their place, and reads the queue's length (`_queue`) for what shutdown leaves behind.
- **Queueing a log record directly** (`batch_queue`). The SDK Logger's `emit` wraps the
  attributes in a BoundedAttributes (a lock and a cleaning pass over values aiva has
  already made primitive) and the processor copies the record again: about 17 µs a record
  here against about 7 µs for building the ReadableLogRecord the processor queues and
  queueing it (`_batch_processor.emit`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from aiva.telemetry.exporters import ExportStats, Signal

logger = logging.getLogger(__name__)


class DropCounter:
    """Stands in for the batch processor's internal metrics: its drop notices (queue full,
    after shutdown) counted in ExportStats."""

    def __init__(self, stats: ExportStats, signal: Signal) -> None:
        self._stats = stats
        self._signal = signal

    def register_queue_size(self, get_queue_size: Callable[[], int]) -> None:
        """Queue size is not exported (yet)."""

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        self._stats.add(self._signal, "dropped", count, handed_over=False)

    def finish_items(self, count: int) -> None:
        """Handed to the exporter: its outcome is counted there, with its result."""
        self._stats.hand_over(self._signal, count)


def count_drops(processor: Any, stats: ExportStats, signal: Signal) -> None:
    """Route a Batch{Span,LogRecord}Processor's drop notices to `stats`, and let shutdown
    count what its queue still holds."""
    batch = processor._batch_processor
    batch._metrics = DropCounter(stats, signal)
    stats.watch_queue(signal, batch._queue.__len__)


def batch_queue(processor: Any) -> Callable[[ReadableLogRecord], None]:
    """A BatchLogRecordProcessor's own queueing call."""
    emit: Callable[[ReadableLogRecord], None] = processor._batch_processor.emit
    return emit


# The self-tests: each on a processor of its own, exporting to a list.


class _Kept(SpanExporter, LogRecordExporter):
    def __init__(self) -> None:
        self.items: list[Any] = []

    def export(self, batch: Sequence[Any]) -> Any:
        self.items.extend(batch)
        return SpanExportResult.SUCCESS if _is_spans(batch) else LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _is_spans(batch: Sequence[Any]) -> bool:
    return bool(batch) and isinstance(batch[0], ReadableSpan)


def batch_queue_works() -> str | None:
    """A record queued directly is exported by the processor's flush."""
    kept = _Kept()
    processor = BatchLogRecordProcessor(kept, schedule_delay_millis=60_000)
    try:
        record = ReadableLogRecord(
            LogRecord(body="fast layer self-test"),
            LoggerProvider(shutdown_on_exit=False).resource,
            InstrumentationScope("aiva.fast"),
        )
        batch_queue(processor)(record)
        processor.force_flush(5_000)
        if kept.items != [record]:
            return "a record queued directly was not exported"
    finally:
        processor.shutdown()  # type: ignore[no-untyped-call]
    return None


def drop_counts_work() -> str | None:
    """A span the processor refuses (here: after its shutdown) is counted as dropped, and
    a span waiting in the queue is found there."""
    span = TracerProvider(shutdown_on_exit=False).get_tracer("aiva.fast").start_span("self-test")
    span.end()
    refusing, waiting = ExportStats(), ExportStats()
    processors = []
    for stats in (refusing, waiting):
        processor = BatchSpanProcessor(_Kept(), schedule_delay_millis=60_000)
        count_drops(processor, stats, "spans")
        processors.append(processor)
    try:
        processors[0].shutdown()  # type: ignore[no-untyped-call]
        processors[0].on_end(span)  # type: ignore[arg-type]
        processors[1].on_end(span)  # type: ignore[arg-type]
        if refusing.counts()["spans", "dropped"] != 1:
            return "a span refused after shutdown was not counted as dropped"
        if waiting.abandon()["spans"] != 1:
            return "the queue's length could not be read"
    finally:
        processors[1].shutdown()  # type: ignore[no-untyped-call]
    return None
