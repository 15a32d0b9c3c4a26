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
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import Aggregation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from aiva.fast import FastLayer, probe
from aiva.telemetry.otlp_target import OtlpTarget
from aiva.telemetry.oversize import export_in_parts, size_options

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
        # Sources of counts read when the counts are (aiva.telemetry.sdk_drops).
        self._refreshes: list[Callable[[], None]] = []
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

    def refresh_with(self, refresh: Callable[[], None]) -> None:
        """`refresh` folds counts kept elsewhere in, before they are read (not under the
        lock: it calls `add`)."""
        self._refreshes.append(refresh)

    def _refresh(self) -> None:
        for refresh in list(self._refreshes):
            refresh()

    def abandon(self) -> dict[Signal, int]:
        """Count everything that has not left as dropped, once (shutdown giving up on it),
        and return it by signal; later outcomes are not counted."""
        self._refresh()
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
        self._refresh()
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
    (aiva.telemetry.oversize), each item counted once. Telling that refusal from a
    collector that is down takes the fast layer's `export_outcomes` hook (`fast`: the
    layer in use; None: whatever this process's probe found)."""

    def __init__(
        self, inner: Any, stats: ExportStats, signal: Signal, item: str, fast: FastLayer | None
    ) -> None:
        _Counting.__init__(self, stats, signal)
        self.inner = inner
        self._item = item
        self._refusal: Callable[[], str | None] = lambda: None
        if "export_outcomes" in (probe() if fast is None else fast):
            from aiva.fast.export_outcomes import watch_outcomes

            outcomes = watch_outcomes(inner)
            if outcomes is not None:  # an exporter of another kind (tests)
                self._refusal = outcomes.refused_as_too_large

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
    def __init__(
        self, inner: SpanExporter, stats: ExportStats, fast: FastLayer | None = None
    ) -> None:
        _CountingItems.__init__(self, inner, stats, "spans", "span", fast)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._export_items(spans, SpanExportResult.SUCCESS):
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


class CountingLogExporter(LogRecordExporter, _CountingItems):
    def __init__(
        self, inner: LogRecordExporter, stats: ExportStats, fast: FastLayer | None = None
    ) -> None:
        _CountingItems.__init__(self, inner, stats, "logs", "log record", fast)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self._export_items(batch, LogRecordExportResult.SUCCESS):
            return LogRecordExportResult.SUCCESS
        return LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


class CountingMetricExporter(MetricExporter, _Counting):
    def __init__(
        self,
        inner: MetricExporter,
        stats: ExportStats,
        *,
        preferred_temporality: dict[type, AggregationTemporality] | None,
        preferred_aggregation: dict[type, Aggregation] | None,
    ) -> None:
        """The preferences are those `inner` was built with (the reader asks this
        exporter; the SDK keeps an exporter's own ones private)."""
        MetricExporter.__init__(
            self,
            preferred_temporality=preferred_temporality,
            preferred_aggregation=preferred_aggregation,
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


# (module, class) of the OTLP exporter for each signal and protocol: the SDK's, where
# the fast layer's `otlp_grpc_encoder` gives spans and logs over gRPC aiva's cheaper
# encoder (aiva.fast.otlp_encoding).
_FAST_GRPC_EXPORTERS = {
    ("traces", "grpc"): ("aiva.fast.grpc_exporters", "OTLPSpanExporter"),
    ("logs", "grpc"): ("aiva.fast.grpc_exporters", "OTLPLogExporter"),
}
_OTLP_EXPORTERS = {
    ("traces", "grpc"): (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "OTLPSpanExporter",
    ),
    ("logs", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc._log_exporter", "OTLPLogExporter"),
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


def otlp_exporter(target: OtlpTarget, fast: FastLayer | None = None, **options: Any) -> Any:
    """The OTLP exporter for the target's signal and protocol (imported lazily), every
    value passed explicitly: the SDK's exporters read OTEL_* variables for what they are
    not given, and aiva's settings already hold those, with their precedence applied.
    `fast`: the fast layer in use (None: whatever this process's probe found)."""
    key = (target.signal, target.protocol)
    fast_encoder = "otlp_grpc_encoder" in (probe() if fast is None else fast)
    fast_grpc = fast_encoder and key in _FAST_GRPC_EXPORTERS
    module, name = (_FAST_GRPC_EXPORTERS if fast_grpc else _OTLP_EXPORTERS)[key]
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
