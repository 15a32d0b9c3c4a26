"""OTLP exporters per signal and protocol, wrapped to count what was exported, failed or dropped."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from aiva.settings.model import OtlpSettings

logger = logging.getLogger(__name__)

Signal = Literal["spans", "logs", "metric_points"]
Outcome = Literal["exported", "failed", "dropped"]
SIGNALS: tuple[Signal, ...] = ("spans", "logs", "metric_points")
OUTCOMES: tuple[Outcome, ...] = ("exported", "failed", "dropped")


class ExportStats:
    """Counts of exported, failed and dropped telemetry per signal, and whether exports fail now.

    Written by the SDK's export threads, read by metric callbacks and the health check:
    a lock keeps each update whole.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {(s, o): 0 for s in SIGNALS for o in OUTCOMES}
        self._failing: dict[Signal, bool] = dict.fromkeys(SIGNALS, False)

    def add(self, signal: Signal, outcome: Outcome, count: int) -> None:
        with self._lock:
            self._counts[signal, outcome] += count
            if outcome != "dropped":
                self._failing[signal] = outcome == "failed"

    def counts(self) -> dict[tuple[Signal, Outcome], int]:
        with self._lock:
            return dict(self._counts)

    def failing(self) -> list[Signal]:
        """The signals whose last export failed."""
        with self._lock:
            return [s for s, failed in self._failing.items() if failed]


class _Counting:
    """Shared export accounting; a broad except here is the exporter boundary (logged)."""

    def __init__(self, stats: ExportStats, signal: Signal) -> None:
        self._stats = stats
        self._signal = signal

    def _export(self, call: Callable[[], Any], count: int, success: Any) -> Any:
        try:
            result = call()
        except Exception:
            logger.exception("OTLP export of %d %s raised", count, self._signal)
            self._stats.add(self._signal, "failed", count)
            raise
        self._stats.add(self._signal, "exported" if result == success else "failed", count)
        return result


class CountingSpanExporter(SpanExporter, _Counting):
    def __init__(self, inner: SpanExporter, stats: ExportStats) -> None:
        _Counting.__init__(self, stats, "spans")
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result: SpanExportResult = self._export(
            lambda: self.inner.export(spans), len(spans), SpanExportResult.SUCCESS
        )
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingLogExporter(LogRecordExporter, _Counting):
    def __init__(self, inner: LogRecordExporter, stats: ExportStats) -> None:
        _Counting.__init__(self, stats, "logs")
        self.inner: Any = inner

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result: LogRecordExportResult = self._export(
            lambda: self.inner.export(batch), len(batch), LogRecordExportResult.SUCCESS
        )
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


class CountingMetricExporter(MetricExporter, _Counting):
    def __init__(self, inner: MetricExporter, stats: ExportStats) -> None:
        MetricExporter.__init__(
            self,
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        _Counting.__init__(self, stats, "metric_points")
        self.inner = inner

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        points = sum(
            len(metric.data.data_points)
            for resource in metrics_data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        )
        result: MetricExportResult = self._export(
            lambda: self.inner.export(metrics_data, timeout_millis=timeout_millis),
            points,
            MetricExportResult.SUCCESS,
        )
        return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class DropCounter:
    """Receives the batch processor's drop notices (queue full, after shutdown).

    The SDK reports drops only to its internal metrics, which are switched on by an
    environment variable and also add a counter update to every span: we plug this
    object into the processor instead (see `count_drops`).
    """

    def __init__(self, stats: ExportStats, signal: Signal) -> None:
        self._stats = stats
        self._signal = signal

    def register_queue_size(self, get_queue_size: Callable[[], int]) -> None:
        """Queue size is not exported (yet)."""

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        self._stats.add(self._signal, "dropped", count)

    def finish_items(self, count: int) -> None:
        """Handed to the exporter: counted there, with its result."""


def count_drops(processor: Any, stats: ExportStats, signal: Signal) -> None:
    """Route a Batch{Span,LogRecord}Processor's drop notices to `stats`."""
    batch = getattr(processor, "_batch_processor", None)
    if batch is None or not hasattr(batch, "_metrics"):
        logger.warning(
            "this OpenTelemetry SDK hides its batch queue: %s drops go uncounted", signal
        )
        return
    batch._metrics = DropCounter(stats, signal)


# (module, class) of the OTLP exporter for each signal and protocol: the SDK's, with
# aiva's cheaper encoder for spans and logs over gRPC (see aiva.telemetry.encoding).
_OTLP_EXPORTERS = {
    ("traces", "grpc"): ("aiva.telemetry.grpc_exporters", "OTLPSpanExporter"),
    ("logs", "grpc"): ("aiva.telemetry.grpc_exporters", "OTLPLogExporter"),
    ("metrics", "grpc"): (
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        "OTLPMetricExporter",
    ),
    ("traces", "http/protobuf"): (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "OTLPSpanExporter",
    ),
    ("logs", "http/protobuf"): (
        "opentelemetry.exporter.otlp.proto.http._log_exporter",
        "OTLPLogExporter",
    ),
    ("metrics", "http/protobuf"): (
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "OTLPMetricExporter",
    ),
}


def otlp_exporter(otlp: OtlpSettings, signal: Literal["traces", "logs", "metrics"]) -> Any:
    """The OTLP exporter for `signal` over the configured protocol (imported lazily)."""
    module, name = _OTLP_EXPORTERS[signal, otlp.protocol]
    exporter_class = getattr(importlib.import_module(module), name)
    endpoint = otlp.endpoint or ""
    common = {"headers": dict(otlp.headers), "timeout": otlp.timeout_s}
    if otlp.protocol == "grpc":
        return exporter_class(
            endpoint=endpoint, insecure=not endpoint.startswith("https://"), **common
        )
    # OTEL_EXPORTER_OTLP_ENDPOINT is a base URL; each signal has its own path under it.
    return exporter_class(endpoint=f"{endpoint.rstrip('/')}/v1/{signal}", **common)
