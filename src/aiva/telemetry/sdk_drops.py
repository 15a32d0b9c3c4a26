"""Drop counts on the plain pipeline, from the SDK's own processor metrics.

The SDK's batch processors count what they drop (a full queue, or after shutdown) in
the semantic conventions' SDK metrics, `otel.sdk.processor.span.processed` and
`otel.sdk.processor.log.processed` with `error.type`, and report their queue's length
(`otel.sdk.processor.*.queue.size`), when OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED is
true as they are built, into the meter provider they are given. The plain pipeline
builds each batch processor that way, with a meter provider of its own read in memory,
and folds those counts into aiva's ExportStats (`aiva.telemetry.dropped{signal}`) when
they are read. It costs a counter update a span or record, which the fast layer's
DropCounter (aiva.fast.batch) does not.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from aiva.telemetry.exporters import ExportStats, Signal

INTERNAL_METRICS = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"
_KIND = {"spans": "span", "logs": "log"}  # in the metrics' names
P = TypeVar("P")


class SdkDropCounts:
    """One batch processor's drops and queue length, as its own metrics tell them."""

    def __init__(self, stats: ExportStats, signal: Signal) -> None:
        self._stats = stats
        self._signal = signal
        self._reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self._reader], shutdown_on_exit=False)
        self._lock = threading.Lock()
        self._counted = 0
        self._queued = 0

    def built(self, make: Callable[[MeterProvider], P]) -> P:
        """The processor `make` builds with this meter provider, its metrics switched on."""
        with _internal_metrics():
            processor = make(self.meter_provider)
        self._stats.refresh_with(self.refresh)
        self._stats.watch_queue(self._signal, lambda: self._queued)
        return processor

    def refresh(self) -> None:
        """Fold the drops counted since the last read into the stats; note the queue."""
        with self._lock:
            dropped, queued = self._read()
            if dropped > self._counted:
                self._stats.add(self._signal, "dropped", dropped - self._counted, handed_over=False)
                self._counted = dropped
            self._queued = queued

    def _read(self) -> tuple[int, int]:
        data = self._reader.get_metrics_data()
        kind = _KIND[self._signal]
        dropped = queued = 0
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = int(getattr(point, "value", 0))
                        if metric.name == f"otel.sdk.processor.{kind}.processed":
                            if (point.attributes or {}).get("error.type"):
                                dropped += value
                        elif metric.name == f"otel.sdk.processor.{kind}.queue.size":
                            queued += value
        return dropped, queued


@contextmanager
def _internal_metrics() -> Iterator[None]:
    """OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true while a processor is built (it reads
    the variable then, once), put back after."""
    before = os.environ.get(INTERNAL_METRICS)
    os.environ[INTERNAL_METRICS] = "true"
    try:
        yield
    finally:
        if before is None:
            del os.environ[INTERNAL_METRICS]
        else:
            os.environ[INTERNAL_METRICS] = before
