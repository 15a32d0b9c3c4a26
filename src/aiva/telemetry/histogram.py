"""A histogram aggregated by aiva and handed to the SDK's metric readers at collection.

Written by hand for the one instrument recorded on every request,
`http.server.request.duration`. The SDK's synchronous `Histogram.record` hashes the
attribute dict (sorted, recursively), takes a lock per step and aggregates the
measurement once per reader: about 15 µs a request with the Prometheus and OTLP
readers, more than Starlette's own work. Here a measurement is keyed by a tuple the
caller already has (method, route template, status, scheme: bounded by construction),
aggregated once under one lock, and turned into the SDK's own point types when a
reader collects. The OpenTelemetry specification calls such a source a
MetricProducer; the Python SDK (1.45) has none, so `aiva.telemetry.metrics` gives its
two readers one.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope


def _check_boundaries(boundaries: Sequence[float]) -> None:
    """Refuse what the SDK's explicit-bucket aggregation refuses: `record` bisects the
    boundaries, which would count unsorted ones silently wrong."""
    if not all(math.isfinite(bound) for bound in boundaries):
        raise ValueError(f"bucket boundaries must be finite: {list(boundaries)}")
    if any(low >= high for low, high in itertools.pairwise(boundaries)):
        raise ValueError(f"bucket boundaries must be strictly increasing: {list(boundaries)}")


class _Series:
    """One attribute set's counts: the explicit buckets, count, sum, min and max."""

    __slots__ = ("attributes", "bucket_counts", "count", "max", "min", "start_ns", "sum")

    def __init__(self, attributes: Mapping[str, Any], buckets: int, start_ns: int) -> None:
        self.attributes = attributes
        self.bucket_counts = [0] * buckets
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.start_ns = start_ns

    def add(self, other: _Series) -> None:
        for index, count in enumerate(other.bucket_counts):
            self.bucket_counts[index] += count
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def point(self, start_ns: int, now_ns: int, bounds: Sequence[float]) -> HistogramDataPoint:
        return HistogramDataPoint(
            attributes=self.attributes,
            start_time_unix_nano=start_ns,
            time_unix_nano=now_ns,
            count=self.count,
            sum=self.sum,
            bucket_counts=tuple(self.bucket_counts),
            explicit_bounds=bounds,
            min=self.min,
            max=self.max,
            exemplars=[],
        )


class _DeltaState:
    """What one delta-temporality reader has not collected yet."""

    def __init__(self, start_ns: int) -> None:
        self.series: dict[Hashable, _Series] = {}
        self.seen: set[Hashable] = set()  # reported before: their points start at since_ns
        self.since_ns = start_ns

    def start_of(self, key: Hashable, series: _Series) -> int:
        """As the SDK's delta points: from the last collection, or from the first
        measurement for a series new since then."""
        return self.since_ns if key in self.seen else max(self.since_ns, series.start_ns)


class ProducedHistogram:
    """An explicit-bucket histogram with the SDK's semantics, aggregated outside the SDK.

    `record` is called on the serving thread; `collect` on the readers' threads. Every
    reader sees every measurement once: cumulative readers the running totals since
    start, delta readers what came since their own previous collection.
    """

    def __init__(
        self,
        name: str,
        *,
        unit: str,
        description: str,
        boundaries: Sequence[float],
        scope: InstrumentationScope,
    ) -> None:
        _check_boundaries(boundaries)
        self.scope = scope
        self._name = name
        self._unit = unit
        self._description = description
        self._bounds = tuple(boundaries)
        self._lock = threading.Lock()
        self._fresh: dict[Hashable, _Series] = {}  # recorded since the last collection
        self._totals: dict[Hashable, _Series] = {}  # for cumulative readers
        self._deltas: dict[int, _DeltaState] = {}  # per delta reader, by id()

    def attach(self, reader: object, temporality: AggregationTemporality) -> None:
        """Register a reader before it first collects; delta readers get their own state."""
        if temporality is AggregationTemporality.DELTA:
            with self._lock:
                self._deltas[id(reader)] = _DeltaState(time.time_ns())

    def record(self, key: Hashable, attributes: Mapping[str, Any], value: float) -> None:
        """One measurement; `key` stands for `attributes` (same key, same attributes)."""
        with self._lock:
            series = self._fresh.get(key)
            if series is None:
                series = self._fresh[key] = _Series(
                    attributes, len(self._bounds) + 1, time.time_ns()
                )
            # Bucket i holds (bounds[i-1], bounds[i]], as the SDK's aggregation does.
            series.bucket_counts[bisect_left(self._bounds, value)] += 1
            series.count += 1
            series.sum += value
            if value < series.min:
                series.min = value
            if value > series.max:
                series.max = value

    def collect(self, reader: object) -> Metric | None:
        """This reader's view, as the SDK's Metric; None when nothing was ever recorded."""
        now_ns = time.time_ns()
        with self._lock:
            self._fold_fresh()
            delta = self._deltas.get(id(reader))
            if delta is None:
                points = [s.point(s.start_ns, now_ns, self._bounds) for s in self._totals.values()]
                temporality = AggregationTemporality.CUMULATIVE
            else:
                points = [
                    s.point(delta.start_of(key, s), now_ns, self._bounds)
                    for key, s in delta.series.items()
                ]
                delta.seen.update(delta.series)
                delta.series = {}
                delta.since_ns = now_ns
                temporality = AggregationTemporality.DELTA
        if not points:
            return None
        return Metric(
            name=self._name,
            description=self._description,
            unit=self._unit,
            data=Histogram(data_points=points, aggregation_temporality=temporality),
        )

    def _fold_fresh(self) -> None:
        """Move what was recorded since the last collection into every reader's state."""
        fresh, self._fresh = self._fresh, {}
        targets = [self._totals, *(d.series for d in self._deltas.values())]
        for key, series in fresh.items():
            for target in targets:
                kept = target.get(key)
                if kept is None:
                    kept = target[key] = _Series(
                        series.attributes, len(series.bucket_counts), series.start_ns
                    )
                kept.add(series)
