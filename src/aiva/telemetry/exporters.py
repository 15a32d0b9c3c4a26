"""OTLP exporters per signal and protocol, wrapped to count what was exported, failed or dropped."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
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

from aiva.telemetry.otlp_target import OtlpTarget
from aiva.telemetry.oversize import export_in_parts, size_options, watch_outcomes

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
        # What has not left yet: handed to an exporter with no outcome counted so far,
        # and the batch queues' lengths. Shutdown counts it as dropped when it gives up.
        self._handed_over: dict[Signal, int] = dict.fromkeys(SIGNALS, 0)
        self._queues: list[tuple[Signal, Callable[[], int]]] = []
        self._abandoned = False

    def add(self, signal: Signal, outcome: Outcome, count: int, handed_over: bool = True) -> None:
        """Count `count` items' outcome; `handed_over`: they had been handed to an exporter
        (a batch queue's own drops had not)."""
        with self._lock:
            if self._abandoned:  # an export that returned after shutdown gave up on it
                return
            self._counts[signal, outcome] += count
            if handed_over:
                self._handed_over[signal] = max(0, self._handed_over[signal] - count)
            if outcome != "dropped":
                self._failing[signal] = outcome == "failed"

    def hand_over(self, signal: Signal, count: int) -> None:
        """`count` items go to an exporter now; their outcome is counted when it returns."""
        with self._lock:
            self._handed_over[signal] += count

    def watch_queue(self, signal: Signal, length: Callable[[], int]) -> None:
        """A batch queue of `signal`, whose items have not left yet."""
        with self._lock:
            self._queues.append((signal, length))

    def abandon(self) -> dict[Signal, int]:
        """Count everything that has not left as dropped, once (shutdown giving up on it),
        and return it by signal; later outcomes are not counted."""
        with self._lock:
            if self._abandoned:
                return dict.fromkeys(SIGNALS, 0)
            left = dict(self._handed_over)
            for signal, length in self._queues:
                left[signal] += length()
            for signal, count in left.items():
                self._counts[signal, "dropped"] += count
            self._abandoned = True
            return left

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


class _CountingItems(_Counting):
    """Span and log record export: a batch refused as too large goes in halves
    (aiva.telemetry.oversize), each item counted once."""

    def __init__(self, inner: Any, stats: ExportStats, signal: Signal, item: str) -> None:
        _Counting.__init__(self, stats, signal)
        self.inner = inner
        self._item = item
        outcomes = watch_outcomes(inner)
        self._refusal = outcomes.refused_as_too_large if outcomes else lambda: None

    def _export_items(self, batch: Sequence[Any], success: Any) -> bool:
        def send(part: Sequence[Any]) -> bool:
            try:
                return bool(self.inner.export(part) == success)
            except Exception:
                logger.exception("OTLP export of %d %s raised", len(part), self._signal)
                return False

        def count(outcome: Outcome, items: int) -> None:
            self._stats.add(self._signal, outcome, items)

        return export_in_parts(batch, send, self._refusal, count, self._item)


class CountingSpanExporter(SpanExporter, _CountingItems):
    def __init__(self, inner: SpanExporter, stats: ExportStats) -> None:
        _CountingItems.__init__(self, inner, stats, "spans", "span")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._export_items(spans, SpanExportResult.SUCCESS):
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


class CountingLogExporter(LogRecordExporter, _CountingItems):
    def __init__(self, inner: LogRecordExporter, stats: ExportStats) -> None:
        _CountingItems.__init__(self, inner, stats, "logs", "log record")

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self._export_items(batch, LogRecordExportResult.SUCCESS):
            return LogRecordExportResult.SUCCESS
        return LogRecordExportResult.FAILURE

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
        self._stats.add(self._signal, "dropped", count, handed_over=False)

    def finish_items(self, count: int) -> None:
        """Handed to the exporter: its outcome is counted there, with its result."""
        self._stats.hand_over(self._signal, count)


def count_drops(processor: Any, stats: ExportStats, signal: Signal) -> None:
    """Route a Batch{Span,LogRecord}Processor's drop notices to `stats`."""
    batch = getattr(processor, "_batch_processor", None)
    if batch is None or not hasattr(batch, "_metrics"):
        logger.warning(
            "this OpenTelemetry SDK hides its batch queue: %s drops go uncounted", signal
        )
        return
    batch._metrics = DropCounter(stats, signal)
    queue = getattr(batch, "_queue", None)  # a deque: what shutdown would leave behind
    if queue is not None:
        stats.watch_queue(signal, queue.__len__)


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


def otlp_exporter(target: OtlpTarget, **options: Any) -> Any:
    """The OTLP exporter for the target's signal and protocol (imported lazily), every
    value passed explicitly: the SDK's exporters read OTEL_* variables for what they are
    not given, and aiva's settings already hold those, with their precedence applied."""
    module, name = _OTLP_EXPORTERS[target.signal, target.protocol]
    exporter_class = getattr(importlib.import_module(module), name)
    common = {
        "endpoint": target.endpoint,
        "headers": dict(target.headers),
        "timeout": target.timeout_s,
        **options,  # the metric exporter's temporality and aggregation
    }
    if target.signal != "metrics":  # spans and log records: no request over the limit
        common.update(size_options(target.protocol))
    if target.protocol == "grpc":
        import grpc  # type: ignore[import-untyped]

        credentials = None
        if not target.insecure and (target.certificate or target.client_certificate):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(target.certificate),
                private_key=_read(target.client_key),
                certificate_chain=_read(target.client_certificate),
            )
        compression = grpc.Compression.Gzip if target.compression == "gzip" else None
        return exporter_class(
            insecure=target.insecure,
            credentials=credentials,
            compression=compression or grpc.Compression.NoCompression,
            **common,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression

    return exporter_class(
        certificate_file=target.certificate,  # None: the system's CA bundle
        session=_ca_file_session() if target.certificate else None,
        client_certificate_file=target.client_certificate,
        client_key_file=target.client_key,
        compression=Compression(target.compression),
        **common,
    )


def _read(path: str | None) -> bytes | None:
    """A PEM file, read once at start-up (before serving)."""
    return Path(path).read_bytes() if path else None


def _ca_file_session() -> Any:
    import requests

    class CaFileSession(requests.Session):
        """A session whose CA file stays the one configured.

        requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, when set, replace a
        session's `verify` on every request (Session.merge_environment_settings), and
        container images commonly set them: the SDK's HTTP exporter would then ignore
        OTEL_EXPORTER_OTLP_CERTIFICATE and fail every export against a private CA.
        """

        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> Any:
            settings = super().merge_environment_settings(*args, **kwargs)
            settings["verify"] = self.verify
            return settings

    return CaFileSession()
